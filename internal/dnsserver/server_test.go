package dnsserver

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func start(t *testing.T, zones ...string) *Server {
	t.Helper()
	s, err := Start(zones...)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func query(t *testing.T, s *Server, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	r, _, err := c.Exchange(m, s.Addr())
	if err != nil {
		t.Fatalf("query %s %s over %s: %v", name, dns.TypeToString[qtype], network, err)
	}
	if r.Id != m.Id {
		t.Fatalf("reply id %d, want %d", r.Id, m.Id)
	}
	return r
}

// rrStrings renders records in presentation form for comparison.
func rrStrings(rrs []dns.RR) []string {
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, rr.String())
	}
	return out
}

func TestAnswers(t *testing.T) {
	s := start(t, "example.test", "other.test.")
	s.Add(
		MustRR("www.example.test. 60 IN A 192.0.2.1"),
		MustRR("www.example.test. 60 IN AAAA 2001:db8::1"),
		MustRR(`multi.example.test. 60 IN TXT "first string" "second string"`),
		MustRR("alias.example.test. 60 IN CNAME hop.example.test."),
		MustRR("hop.example.test. 60 IN CNAME www.other.test."),
		MustRR("www.other.test. 60 IN A 192.0.2.2"),
		MustRR("away.example.test. 60 IN CNAME elsewhere.invalid."),
		MustRR("loop1.example.test. 60 IN CNAME loop2.example.test."),
		MustRR("loop2.example.test. 60 IN CNAME loop1.example.test."),
		MustRR("_acme-challenge.deep.sub.example.test. 60 IN TXT token"),
		MustRR("*.wild.example.test. 60 IN CNAME gw.other.test."),
		MustRR("gw.other.test. 60 IN A 192.0.2.3"),
		MustRR("exists.wild.example.test. 60 IN TXT real"),
	)

	tests := []struct {
		name   string
		qname  string
		qtype  uint16
		rcode  int
		aa     bool
		answer []string
		soaIn  string // zone whose SOA must be the only authority record, "" for none
	}{
		{name: "exact A", qname: "www.example.test.", qtype: dns.TypeA, aa: true,
			answer: []string{"www.example.test.\t60\tIN\tA\t192.0.2.1"}},
		{name: "case-insensitive", qname: "WWW.Example.TEST.", qtype: dns.TypeAAAA, aa: true,
			answer: []string{"www.example.test.\t60\tIN\tAAAA\t2001:db8::1"}},
		{name: "TXT with two strings", qname: "multi.example.test.", qtype: dns.TypeTXT, aa: true,
			answer: []string{"multi.example.test.\t60\tIN\tTXT\t\"first string\" \"second string\""}},
		{name: "CNAME chain across zones", qname: "alias.example.test.", qtype: dns.TypeA, aa: true,
			answer: []string{
				"alias.example.test.\t60\tIN\tCNAME\thop.example.test.",
				"hop.example.test.\t60\tIN\tCNAME\twww.other.test.",
				"www.other.test.\t60\tIN\tA\t192.0.2.2",
			}},
		{name: "qtype CNAME is just the CNAME", qname: "alias.example.test.", qtype: dns.TypeCNAME, aa: true,
			answer: []string{"alias.example.test.\t60\tIN\tCNAME\thop.example.test."}},
		{name: "CNAME chain ending in NODATA", qname: "alias.example.test.", qtype: dns.TypeTXT, aa: true,
			answer: []string{
				"alias.example.test.\t60\tIN\tCNAME\thop.example.test.",
				"hop.example.test.\t60\tIN\tCNAME\twww.other.test.",
			}, soaIn: "other.test."},
		{name: "CNAME leaving the zones", qname: "away.example.test.", qtype: dns.TypeA, aa: true,
			answer: []string{"away.example.test.\t60\tIN\tCNAME\telsewhere.invalid."}},
		{name: "CNAME loop ends", qname: "loop1.example.test.", qtype: dns.TypeA, aa: true,
			answer: []string{
				"loop1.example.test.\t60\tIN\tCNAME\tloop2.example.test.",
				"loop2.example.test.\t60\tIN\tCNAME\tloop1.example.test.",
			}},
		{name: "NXDOMAIN", qname: "nope.example.test.", qtype: dns.TypeA, rcode: dns.RcodeNameError, aa: true,
			soaIn: "example.test."},
		{name: "NODATA", qname: "www.example.test.", qtype: dns.TypeTXT, aa: true, soaIn: "example.test."},
		{name: "empty non-terminal is NODATA", qname: "sub.example.test.", qtype: dns.TypeTXT, aa: true,
			soaIn: "example.test."},
		{name: "empty non-terminal deeper", qname: "deep.sub.example.test.", qtype: dns.TypeA, aa: true,
			soaIn: "example.test."},
		{name: "apex SOA", qname: "example.test.", qtype: dns.TypeSOA, aa: true,
			answer: []string{"example.test.\t3600\tIN\tSOA\tns1.example.test. hostmaster.example.test. 1 7200 3600 1209600 60"}},
		{name: "apex NS", qname: "other.test.", qtype: dns.TypeNS, aa: true,
			answer: []string{"other.test.\t3600\tIN\tNS\tns1.other.test."}},
		{name: "outside every zone", qname: "example.com.", qtype: dns.TypeA, rcode: dns.RcodeRefused},
		{name: "parent of a zone", qname: "test.", qtype: dns.TypeSOA, rcode: dns.RcodeRefused},
		{name: "wildcard synthesized", qname: "app.wild.example.test.", qtype: dns.TypeA, aa: true,
			answer: []string{
				"app.wild.example.test.\t60\tIN\tCNAME\tgw.other.test.",
				"gw.other.test.\t60\tIN\tA\t192.0.2.3",
			}},
		{name: "wildcard does not cover existing names", qname: "exists.wild.example.test.", qtype: dns.TypeA,
			aa: true, soaIn: "example.test."},
		{name: "ANY", qname: "www.example.test.", qtype: dns.TypeANY, aa: true,
			answer: []string{"www.example.test.\t60\tIN\tA\t192.0.2.1", "www.example.test.\t60\tIN\tAAAA\t2001:db8::1"}},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, tt := range tests {
			t.Run(network+"/"+tt.name, func(t *testing.T) {
				r := query(t, s, network, tt.qname, tt.qtype)
				if r.Rcode != tt.rcode {
					t.Errorf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.rcode])
				}
				if r.Authoritative != tt.aa {
					t.Errorf("AA %v, want %v", r.Authoritative, tt.aa)
				}
				if got := rrStrings(r.Answer); !reflect.DeepEqual(got, tt.answer) && len(got)+len(tt.answer) > 0 {
					t.Errorf("answer\n got %q\nwant %q", got, tt.answer)
				}
				if tt.soaIn == "" {
					if len(r.Ns) != 0 {
						t.Errorf("authority %q, want none", rrStrings(r.Ns))
					}
					return
				}
				if len(r.Ns) != 1 {
					t.Fatalf("authority %q, want the SOA of %s", rrStrings(r.Ns), tt.soaIn)
				}
				soa, ok := r.Ns[0].(*dns.SOA)
				if !ok || soa.Hdr.Name != tt.soaIn {
					t.Fatalf("authority %q, want the SOA of %s", rrStrings(r.Ns), tt.soaIn)
				}
				if soa.Hdr.Ttl != 60 {
					t.Errorf("negative SOA TTL %d, want 60 (min of TTL and MINIMUM)", soa.Hdr.Ttl)
				}
			})
		}
	}
}

func TestMalformedQueries(t *testing.T) {
	s := start(t, "example.test")
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}

	notify := new(dns.Msg)
	notify.SetNotify("example.test.")
	r, _, err := c.Exchange(notify, s.Addr())
	if err != nil {
		t.Fatalf("notify: %v", err)
	}
	if r.Rcode != dns.RcodeNotImplemented {
		t.Errorf("notify rcode %s, want NOTIMP", dns.RcodeToString[r.Rcode])
	}

	chaos := new(dns.Msg)
	chaos.SetQuestion("example.test.", dns.TypeTXT)
	chaos.Question[0].Qclass = dns.ClassCHAOS
	r, _, err = c.Exchange(chaos, s.Addr())
	if err != nil {
		t.Fatalf("chaos query: %v", err)
	}
	if r.Rcode != dns.RcodeRefused {
		t.Errorf("CH class rcode %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}

	axfr := new(dns.Msg)
	axfr.SetQuestion("example.test.", dns.TypeAXFR)
	r, _, err = (&dns.Client{Net: "tcp", Timeout: 5 * time.Second}).Exchange(axfr, s.Addr())
	if err != nil {
		t.Fatalf("axfr: %v", err)
	}
	if r.Rcode != dns.RcodeNotImplemented {
		t.Errorf("AXFR rcode %s, want NOTIMP", dns.RcodeToString[r.Rcode])
	}
}

func TestTruncationOverUDP(t *testing.T) {
	s := start(t, "example.test")
	for i := range 40 {
		s.Add(MustRR(fmt.Sprintf(`big.example.test. 60 IN TXT "%s-%02d"`, strings.Repeat("x", 40), i)))
	}
	udp := query(t, s, "udp", "big.example.test.", dns.TypeTXT)
	if !udp.Truncated {
		t.Errorf("UDP answer of %d records not truncated", len(udp.Answer))
	}
	tcp := query(t, s, "tcp", "big.example.test.", dns.TypeTXT)
	if tcp.Truncated || len(tcp.Answer) != 40 {
		t.Errorf("TCP answer: truncated=%v with %d records, want 40 untruncated", tcp.Truncated, len(tcp.Answer))
	}

	// A client that offers a large EDNS0 buffer gets the whole answer over UDP.
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second, UDPSize: 4096}
	m := new(dns.Msg)
	m.SetQuestion("big.example.test.", dns.TypeTXT)
	m.SetEdns0(4096, false)
	r, _, err := c.Exchange(m, s.Addr())
	if err != nil {
		t.Fatalf("EDNS0 query: %v", err)
	}
	if r.Truncated || len(r.Answer) != 40 || r.IsEdns0() == nil {
		t.Errorf("EDNS0 answer: truncated=%v, %d records, opt=%v; want 40 records with OPT", r.Truncated, len(r.Answer), r.IsEdns0() != nil)
	}
}

func TestStore(t *testing.T) {
	s := start(t, "Example.Test")
	if got, want := s.Zones(), []string{"example.test."}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Zones() = %q, want %q", got, want)
	}
	s.AddZone("b.test.")
	s.AddZone("a.test")
	s.AddZone("a.test.") // again: no second SOA
	if got, want := s.Zones(), []string{"a.test.", "b.test.", "example.test."}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Zones() = %q, want %q", got, want)
	}
	if n := len(s.Records("a.test.", dns.TypeSOA)); n != 1 {
		t.Errorf("a.test. has %d SOA records, want 1", n)
	}
	// The new zone is answered.
	if r := query(t, s, "udp", "a.test.", dns.TypeNS); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("NS of a zone added after Start: rcode %s, %d answers", dns.RcodeToString[r.Rcode], len(r.Answer))
	}

	before := s.All()

	txt := MustRR(`_acme-challenge.example.test. 60 IN TXT "abc"`)
	s.Add(txt, MustRR(`_ACME-challenge.example.test. 300 IN TXT "abc"`)) // duplicate: other case and TTL
	s.Add(MustRR(`_acme-challenge.example.test. 60 IN TXT "def"`))
	if got := s.Records("_acme-challenge.Example.Test", dns.TypeTXT); len(got) != 2 {
		t.Fatalf("Records = %q, want the two distinct TXT records", rrStrings(got))
	}
	if got := s.Records("_acme-challenge.example.test.", dns.TypeANY); len(got) != 2 {
		t.Fatalf("Records(ANY) = %q, want 2", rrStrings(got))
	}
	if got := s.Records("_acme-challenge.example.test.", dns.TypeA); len(got) != 0 {
		t.Fatalf("Records(A) = %q, want none", rrStrings(got))
	}

	// Records returns copies: changing them does not change the store.
	got := s.Records("_acme-challenge.example.test.", dns.TypeTXT)
	got[0].(*dns.TXT).Txt[0] = "mutated"
	if again := s.Records("_acme-challenge.example.test.", dns.TypeTXT); again[0].(*dns.TXT).Txt[0] != "abc" {
		t.Fatalf("store changed through a returned record: %q", rrStrings(again))
	}
	// Add keeps a copy too.
	txt.(*dns.TXT).Txt[0] = "changed after Add"
	if again := s.Records("_acme-challenge.example.test.", dns.TypeTXT); again[0].(*dns.TXT).Txt[0] != "abc" {
		t.Fatalf("store changed through the added record: %q", rrStrings(again))
	}

	if !s.Remove(MustRR(`_acme-challenge.EXAMPLE.test. 1 IN TXT "abc"`)) {
		t.Fatal("Remove of an existing record (other case and TTL) = false")
	}
	if s.Remove(MustRR(`_acme-challenge.example.test. 60 IN TXT "abc"`)) {
		t.Fatal("second Remove = true")
	}
	if !s.Remove(MustRR(`_acme-challenge.example.test. 60 IN TXT "def"`)) {
		t.Fatal("Remove def = false")
	}
	if after := s.All(); !reflect.DeepEqual(rrStrings(after), rrStrings(before)) {
		t.Fatalf("All() after add and remove\n got %q\nwant %q", rrStrings(after), rrStrings(before))
	}

	// All is sorted by name, type, rdata.
	s.Add(MustRR("z.example.test. 60 IN A 192.0.2.9"), MustRR("z.example.test. 60 IN A 192.0.2.1"),
		MustRR("m.example.test. 60 IN TXT b"), MustRR("m.example.test. 60 IN A 192.0.2.5"))
	var names []string
	for _, rr := range s.All() {
		if strings.HasSuffix(rr.Header().Name, "example.test.") && rr.Header().Name != "example.test." {
			names = append(names, rr.String())
		}
	}
	want := []string{
		"m.example.test.\t60\tIN\tA\t192.0.2.5",
		"m.example.test.\t60\tIN\tTXT\t\"b\"",
		"z.example.test.\t60\tIN\tA\t192.0.2.1",
		"z.example.test.\t60\tIN\tA\t192.0.2.9",
	}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("All() order\n got %q\nwant %q", names, want)
	}
}

func TestHide(t *testing.T) {
	s := start(t, "example.test")
	s.Add(MustRR(`_acme-challenge.example.test. 60 IN TXT "v"`))
	s.SetHide(func(rr dns.RR) bool { return rr.Header().Rrtype == dns.TypeTXT })
	if r := query(t, s, "udp", "_acme-challenge.example.test.", dns.TypeTXT); r.Rcode != dns.RcodeNameError {
		t.Errorf("hidden record: rcode %s with %q, want NXDOMAIN", dns.RcodeToString[r.Rcode], rrStrings(r.Answer))
	}
	if n := len(s.Records("_acme-challenge.example.test.", dns.TypeTXT)); n != 1 {
		t.Errorf("Records sees %d hidden records, want 1", n)
	}
	s.SetHide(nil)
	if r := query(t, s, "udp", "_acme-challenge.example.test.", dns.TypeTXT); len(r.Answer) != 1 {
		t.Errorf("after SetHide(nil): %q, want the record", rrStrings(r.Answer))
	}
}

func TestQueriesAndClose(t *testing.T) {
	s, err := Start("example.test")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		query(t, s, "udp", "example.test.", dns.TypeSOA)
	}
	query(t, s, "tcp", "example.test.", dns.TypeSOA)
	if n := s.Queries(); n != 4 {
		t.Errorf("Queries() = %d, want 4", n)
	}
	addr := s.Addr()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("tcp %s still accepts after Close", addr)
	}
}

func TestMustRR(t *testing.T) {
	for _, in := range []string{"not a record !!", ""} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("MustRR(%q) did not panic", in)
				}
			}()
			MustRR(in)
		}()
	}
}

// TestConcurrent writes and queries at once; run with -race.
func TestConcurrent(t *testing.T) {
	s := start(t, "example.test")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const writers, readers, rounds = 4, 4, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < rounds && ctx.Err() == nil; i++ {
				rr := MustRR(fmt.Sprintf(`w%d.example.test. 60 IN TXT "%d"`, w, i))
				s.Add(rr)
				_ = s.All()
				if i%2 == 0 && !s.Remove(rr) {
					t.Errorf("Remove of a record just added failed")
				}
			}
		}()
	}
	errs := make(chan error, readers)
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
			for i := 0; i < rounds && ctx.Err() == nil; i++ {
				m := new(dns.Msg)
				m.SetQuestion(fmt.Sprintf("w%d.example.test.", i%writers), dns.TypeTXT)
				r, _, err := c.ExchangeContext(ctx, m, s.Addr())
				if err != nil {
					errs <- err
					return
				}
				if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
					errs <- fmt.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if ctx.Err() != nil {
		t.Fatal("concurrent rounds did not finish within 10s")
	}
	for w := range writers {
		if n := len(s.Records(fmt.Sprintf("w%d.example.test.", w), dns.TypeTXT)); n != rounds/2 {
			t.Errorf("writer %d left %d records, want %d", w, n, rounds/2)
		}
	}
}

func TestReplace(t *testing.T) {
	s := start(t, "example.test")
	old := MustRR(`_tee.example.test. 60 IN TXT "app:443"`)
	s.Add(old)
	if !s.Replace(MustRR(`_tee.EXAMPLE.test. 300 IN TXT "app:443"`), MustRR(`_tee.example.test. 120 IN TXT "app:8443"`)) {
		t.Fatal("Replace of an existing record = false")
	}
	got := rrStrings(s.Records("_tee.example.test.", dns.TypeTXT))
	if want := []string{"_tee.example.test.\t120\tIN\tTXT\t\"app:8443\""}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after Replace: %q, want %q", got, want)
	}
	if s.Replace(old, MustRR(`_tee.example.test. 60 IN TXT "other"`)) {
		t.Fatal("Replace of a missing record = true")
	}
	if n := len(s.Records("_tee.example.test.", dns.TypeTXT)); n != 1 {
		t.Fatalf("a failed Replace changed the store: %d records", n)
	}
}
