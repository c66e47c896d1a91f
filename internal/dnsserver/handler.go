package dnsserver

import (
	"strings"

	"github.com/miekg/dns"
)

// serveDNS answers one query. Every input gets exactly one reply; nothing in
// the message can make it panic (FuzzServeDNS).
func (s *Server) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	resp := s.answer(req)
	if a := w.LocalAddr(); a != nil && a.Network() == "udp" {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil && int(opt.UDPSize()) > size {
			size = int(opt.UDPSize())
		}
		resp.Truncate(size)
	}
	s.queries.Add(1)
	_ = w.WriteMsg(resp)
}

func (s *Server) answer(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	// The reply echoes EDNS0 so that clients which sent it may accept a
	// larger UDP answer; 1232 is the size the DNS flag day 2020 settled on.
	if req.IsEdns0() != nil {
		m.SetEdns0(1232, false)
	}
	switch {
	case req.Response:
		m.Rcode = dns.RcodeFormatError
		return m
	case req.Opcode != dns.OpcodeQuery:
		m.Rcode = dns.RcodeNotImplemented
		return m
	case len(req.Question) != 1:
		m.Rcode = dns.RcodeFormatError
		return m
	}
	q := req.Question[0]
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		m.Rcode = dns.RcodeRefused
		return m
	}
	switch q.Qtype {
	case dns.TypeAXFR, dns.TypeIXFR:
		m.Rcode = dns.RcodeNotImplemented
		return m
	}

	s.mu.RLock()
	defer s.mu.RUnlock()

	name := dns.CanonicalName(q.Name)
	zone := s.zoneFor(name)
	if zone == "" {
		m.Rcode = dns.RcodeRefused
		return m
	}
	m.Authoritative = true

	seen := map[string]bool{}
	for hop := 0; ; hop++ {
		rrs, exists := s.visible(name), false
		if len(rrs) > 0 {
			exists = true
		} else if s.emptyNonTerminal(name) {
			exists = true
		} else if rrs = s.wildcard(name, zone); len(rrs) > 0 {
			exists = true
		}
		if !exists {
			m.Rcode = dns.RcodeNameError
			m.Ns = s.negativeSOA(zone)
			return m
		}
		var match []dns.RR
		var cname *dns.CNAME
		for _, rr := range rrs {
			if q.Qtype == dns.TypeANY || rr.Header().Rrtype == q.Qtype {
				match = append(match, rr)
			}
			if c, ok := rr.(*dns.CNAME); ok && cname == nil {
				cname = c
			}
		}
		if len(match) > 0 {
			m.Answer = append(m.Answer, match...)
			return m
		}
		if cname == nil {
			m.Ns = s.negativeSOA(zone)
			return m
		}
		m.Answer = append(m.Answer, cname)
		seen[name] = true
		target := dns.CanonicalName(cname.Target)
		tz := s.zoneFor(target)
		// A chain that leaves the served zones, loops or runs too long ends
		// with the CNAMEs so far, as an authoritative server would leave the
		// rest to the resolver.
		if tz == "" || seen[target] || hop+1 >= maxChain {
			return m
		}
		name, zone = target, tz
	}
}

// zoneFor returns the longest served zone containing name, or "". The caller
// holds s.mu.
func (s *Server) zoneFor(name string) string {
	best, bestLabels := "", -1
	for z := range s.zones {
		if n := dns.CountLabel(z); n > bestLabels && dns.IsSubDomain(z, name) {
			best, bestLabels = z, n
		}
	}
	return best
}

// visible returns copies of the records at name that are not hidden. The
// caller holds s.mu.
func (s *Server) visible(name string) []dns.RR {
	var out []dns.RR
	for _, rr := range s.records[name] {
		if s.hide != nil && s.hide(rr) {
			continue
		}
		out = append(out, dns.Copy(rr))
	}
	return out
}

// emptyNonTerminal reports whether some visible record lives below name, which
// makes name exist (NODATA rather than NXDOMAIN, RFC 8020). The caller holds
// s.mu.
func (s *Server) emptyNonTerminal(name string) bool {
	suffix := "." + name
	if name == "." {
		suffix = "."
	}
	for owner := range s.records {
		if owner != name && strings.HasSuffix(owner, suffix) && len(s.visible(owner)) > 0 {
			return true
		}
	}
	return false
}

// wildcard synthesizes the answer for a name that does not exist from
// "*.<closest encloser>" (RFC 4592), or returns nil. The caller holds s.mu.
func (s *Server) wildcard(name, zone string) []dns.RR {
	for p := parent(name); p != "" && dns.IsSubDomain(zone, p); p = parent(p) {
		if len(s.visible(p)) == 0 && !s.emptyNonTerminal(p) {
			continue
		}
		// p is the closest encloser.
		rrs := s.visible("*." + p)
		for _, rr := range rrs {
			rr.Header().Name = name
		}
		return rrs
	}
	return nil
}

// parent returns name without its first label, "" for the root.
func parent(name string) string {
	if name == "." {
		return ""
	}
	off, end := dns.NextLabel(name, 0)
	if end {
		return "."
	}
	return name[off:]
}

// negativeSOA returns the zone's SOA for the authority section of a negative
// answer, with the TTL RFC 2308 asks for: the lesser of its TTL and MINIMUM.
// The caller holds s.mu.
func (s *Server) negativeSOA(zone string) []dns.RR {
	for _, rr := range s.records[zone] {
		if soa, ok := rr.(*dns.SOA); ok {
			c := dns.Copy(soa).(*dns.SOA)
			c.Hdr.Ttl = min(c.Hdr.Ttl, c.Minttl)
			return []dns.RR{c}
		}
	}
	return nil
}
