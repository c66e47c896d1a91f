package dnsserver

import (
	"net"
	"testing"

	"github.com/miekg/dns"
)

// recorder is a dns.ResponseWriter that keeps what the handler wrote.
type recorder struct {
	network string
	msgs    []*dns.Msg
}

var _ dns.ResponseWriter = (*recorder)(nil)

func (r *recorder) LocalAddr() net.Addr {
	if r.network == "tcp" {
		return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}
	}
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}
}
func (r *recorder) RemoteAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353}
}
func (r *recorder) WriteMsg(m *dns.Msg) error { r.msgs = append(r.msgs, m); return nil }
func (r *recorder) Write([]byte) (int, error) { return 0, nil }
func (r *recorder) Close() error              { return nil }
func (r *recorder) TsigStatus() error         { return nil }
func (r *recorder) TsigTimersOnly(bool)       {}
func (r *recorder) Hijack()                   {}

// FuzzServeDNS feeds arbitrary bytes, as the server's reader would after
// unpacking, to the handler: it must answer each message once, with the
// query's ID, in a reply that packs, and never panic.
func FuzzServeDNS(f *testing.F) {
	s := &Server{zones: map[string]bool{}, records: map[string][]dns.RR{}}
	s.AddZone("example.test")
	s.Add(
		MustRR("www.example.test. 60 IN A 192.0.2.1"),
		MustRR("a.example.test. 60 IN CNAME b.example.test."),
		MustRR("b.example.test. 60 IN CNAME a.example.test."),
		MustRR("*.w.example.test. 60 IN TXT wild"),
		MustRR(`t.x.example.test. 60 IN TXT "a" "b"`),
	)
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"www.example.test.", dns.TypeA}, {"a.example.test.", dns.TypeA}, {"q.w.example.test.", dns.TypeTXT},
		{"x.example.test.", dns.TypeANY}, {"nope.invalid.", dns.TypeA}, {".", dns.TypeNS},
	} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.SetEdns0(4096, false)
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0, 1, 0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0}) // update opcode, no sections

	f.Fuzz(func(t *testing.T, b []byte) {
		req := new(dns.Msg)
		if err := req.Unpack(b); err != nil {
			return // the server's reader answers FORMERR itself
		}
		for _, network := range []string{"udp", "tcp"} {
			w := &recorder{network: network}
			s.serveDNS(w, req)
			if len(w.msgs) != 1 {
				t.Fatalf("%d replies, want 1", len(w.msgs))
			}
			reply := w.msgs[0]
			if reply.Id != req.Id || !reply.Response {
				t.Fatalf("reply id %d response=%v, want id %d response=true", reply.Id, reply.Response, req.Id)
			}
			if _, err := reply.Pack(); err != nil {
				t.Fatalf("reply does not pack: %v\n%v", err, reply)
			}
		}
	})
}
