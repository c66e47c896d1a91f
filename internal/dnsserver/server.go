package dnsserver

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// maxChain bounds how many CNAMEs one answer follows, so that a loop written by
// a test (or a fuzzer) ends in an answer instead of a hang.
const maxChain = 8

// Server is an authoritative DNS server on 127.0.0.1 serving an in-memory
// record store over UDP and TCP on the same port. It is safe for concurrent
// use; records may change while queries are answered.
type Server struct {
	addr string
	udp  *dns.Server
	tcp  *dns.Server
	wg   sync.WaitGroup

	closeOnce sync.Once
	closeErr  error

	queries atomic.Int64

	mu      sync.RWMutex
	zones   map[string]bool     // canonical FQDNs
	records map[string][]dns.RR // canonical owner name -> records, insertion order
	hide    func(dns.RR) bool
}

// Start listens on a random 127.0.0.1 port (UDP and TCP) and serves the given
// zones, each with an SOA and an NS record at its apex. Zones may be given with
// or without the trailing dot.
func Start(zones ...string) (*Server, error) {
	s := &Server{
		zones:   make(map[string]bool),
		records: make(map[string][]dns.RR),
	}
	for _, z := range zones {
		s.AddZone(z)
	}

	pc, l, err := listenPair()
	if err != nil {
		return nil, err
	}
	s.addr = pc.LocalAddr().String()

	mux := dns.NewServeMux()
	// Every name goes to the one handler, which decides REFUSED itself: zones
	// can be added after Start and a ServeMux pattern per zone would have to be
	// kept in step with them.
	mux.Handle(".", dns.HandlerFunc(s.serveDNS))

	s.udp = &dns.Server{PacketConn: pc, Handler: mux}
	s.tcp = &dns.Server{Listener: l, Handler: mux}

	started := make(chan struct{}, 2)
	errs := make(chan error, 2)
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		srv.NotifyStartedFunc = func() { started <- struct{}{} }
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := srv.ActivateAndServe(); err != nil {
				errs <- err
			}
		}()
	}
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for n := 0; n < 2; {
		select {
		case <-started:
			n++
		case err := <-errs:
			_ = s.Close()
			return nil, fmt.Errorf("starting dns server on %s: %w", s.addr, err)
		case <-timeout.C:
			_ = s.Close()
			return nil, fmt.Errorf("starting dns server on %s: listeners did not start within 10s", s.addr)
		}
	}
	return s, nil
}

// listenPair opens UDP and TCP sockets on the same random loopback port. The
// port the kernel picks for UDP may be taken for TCP, so it tries a few times.
func listenPair() (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, fmt.Errorf("listening on udp 127.0.0.1: %w", err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l, nil
		}
		lastErr = err
		pc.Close()
	}
	return nil, nil, fmt.Errorf("listening on tcp on the same port as udp: %w", lastErr)
}

// Addr returns "127.0.0.1:port", valid for both UDP and TCP.
func (s *Server) Addr() string { return s.addr }

// Close stops both listeners and waits for their goroutines to return.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		for _, srv := range []*dns.Server{s.udp, s.tcp} {
			if err := srv.Shutdown(); err != nil {
				errs = append(errs, err)
			}
		}
		s.wg.Wait()
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("stopping dns server on %s: %w", s.addr, err)
		}
	})
	return s.closeErr
}

// AddZone starts serving zone, adding an SOA and an NS record at its apex if
// it is new. The NS target is ns1.<zone>; it has no address record.
func (s *Server) AddZone(zone string) {
	z := dns.CanonicalName(zone)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.zones[z] {
		return
	}
	s.zones[z] = true
	// The serial stays fixed: All() snapshots then compare equal whenever the
	// records a test cares about are equal.
	soa := &dns.SOA{
		Hdr:     dns.RR_Header{Name: z, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 3600},
		Ns:      "ns1." + z,
		Mbox:    "hostmaster." + z,
		Serial:  1,
		Refresh: 7200,
		Retry:   3600,
		Expire:  1209600,
		Minttl:  60,
	}
	ns := &dns.NS{
		Hdr: dns.RR_Header{Name: z, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: 3600},
		Ns:  "ns1." + z,
	}
	s.addLocked(soa)
	s.addLocked(ns)
}

// Zones returns the served zones as FQDNs with the trailing dot, sorted.
func (s *Server) Zones() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.zones))
	for z := range s.zones {
		out = append(out, z)
	}
	sort.Strings(out)
	return out
}

// Add stores copies of rrs. A record identical to a stored one (same name,
// class, type and rdata; TTL ignored) is skipped. Records outside every zone
// are stored but never answered. A zero class is taken as IN.
func (s *Server) Add(rrs ...dns.RR) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rr := range rrs {
		if rr == nil {
			continue
		}
		s.addLocked(rr)
	}
}

func (s *Server) addLocked(rr dns.RR) {
	c := dns.Copy(rr)
	h := c.Header()
	h.Name = dns.CanonicalName(h.Name)
	if h.Class == 0 {
		h.Class = dns.ClassINET
	}
	for _, old := range s.records[h.Name] {
		if dns.IsDuplicate(old, c) {
			return
		}
	}
	s.records[h.Name] = append(s.records[h.Name], c)
}

// Remove deletes the stored record identical to rr (TTL ignored) and reports
// whether there was one.
func (s *Server) Remove(rr dns.RR) bool {
	if rr == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.removeLocked(rr)
}

func (s *Server) removeLocked(rr dns.RR) bool {
	c := dns.Copy(rr)
	h := c.Header()
	h.Name = dns.CanonicalName(h.Name)
	if h.Class == 0 {
		h.Class = dns.ClassINET
	}
	set := s.records[h.Name]
	for i, old := range set {
		if dns.IsDuplicate(old, c) {
			set = append(set[:i:i], set[i+1:]...)
			if len(set) == 0 {
				delete(s.records, h.Name)
			} else {
				s.records[h.Name] = set
			}
			return true
		}
	}
	return false
}

// Replace swaps the stored record identical to old (TTL ignored) for repl in
// one step, so that no query sees neither of them, and reports whether old was
// there. If repl duplicates another stored record, old is just removed. An
// update through an API (such as internal/cfemu's) is atomic for DNS readers.
func (s *Server) Replace(old, repl dns.RR) bool {
	if old == nil || repl == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.removeLocked(old) {
		return false
	}
	s.addLocked(repl)
	return true
}

// Records returns copies of the records at exactly name with type qtype
// (dns.TypeANY: every type), hidden ones included, in insertion order.
func (s *Server) Records(name string, qtype uint16) []dns.RR {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []dns.RR
	for _, rr := range s.records[dns.CanonicalName(name)] {
		if qtype == dns.TypeANY || rr.Header().Rrtype == qtype {
			out = append(out, dns.Copy(rr))
		}
	}
	return out
}

// All returns copies of every stored record, hidden ones included, sorted by
// owner name, type, then rdata text, so two snapshots compare with
// reflect.DeepEqual or by their String forms.
func (s *Server) All() []dns.RR {
	s.mu.RLock()
	var out []dns.RR
	for _, set := range s.records {
		for _, rr := range set {
			out = append(out, dns.Copy(rr))
		}
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Header(), out[j].Header()
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		if a.Rrtype != b.Rrtype {
			return a.Rrtype < b.Rrtype
		}
		return rdata(out[i]) < rdata(out[j])
	})
	return out
}

// rdata is the presentation form of rr without its header.
func rdata(rr dns.RR) string {
	return strings.TrimPrefix(rr.String(), rr.Header().String())
}

// SetHide makes the server answer as if the records for which f returns true
// did not exist (they stay in the store, visible to Records and All), to
// simulate a write that never propagates. nil clears it.
func (s *Server) SetHide(f func(dns.RR) bool) {
	s.mu.Lock()
	s.hide = f
	s.mu.Unlock()
}

// Queries returns how many queries the server has answered.
func (s *Server) Queries() int { return int(s.queries.Load()) }

// MustRR parses a record in zone-file syntax and panics on error. It is meant
// for tests and fixed literals.
func MustRR(s string) dns.RR {
	rr, err := dns.NewRR(s)
	if err != nil {
		panic(fmt.Sprintf("dnsserver.MustRR(%q): %v", s, err))
	}
	if rr == nil {
		panic(fmt.Sprintf("dnsserver.MustRR(%q): no record in input", s))
	}
	return rr
}
