package bind9

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestStartServesZoneAndAcceptsSignedUpdate(t *testing.T) {
	s, err := Start(Options{Dir: t.TempDir(), Zone: "example.test", ZoneFile: "$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 60\n@ IN NS ns1\nns1 IN A 127.0.0.1\n"})
	if errors.Is(err, ErrNotInstalled) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	up := new(dns.Msg)
	up.SetUpdate("example.test.")
	rr, _ := dns.NewRR(`x.example.test. 60 IN TXT "hello"`)
	up.Insert([]dns.RR{rr})
	c := &dns.Client{Timeout: 2 * time.Second, TsigSecret: map[string]string{s.KeyName: s.Secret}}
	unsigned, _, err := c.Exchange(up.Copy(), s.Addr)
	if err != nil || unsigned.Rcode != dns.RcodeRefused {
		t.Fatalf("unsigned update: %v %v, want REFUSED", unsigned, err)
	}
	up.SetTsig(s.KeyName, dns.HmacSHA256, 300, time.Now().Unix())
	r, _, err := c.Exchange(up, s.Addr)
	if err != nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("signed update: %v %v", r, err)
	}
	q := new(dns.Msg)
	q.SetQuestion("x.example.test.", dns.TypeTXT)
	a, _, err := c.Exchange(q, s.Addr)
	if err != nil || len(a.Answer) != 1 || !strings.Contains(a.Answer[0].String(), `"hello"`) {
		t.Fatalf("query after update: %v %v", a, err)
	}
	s.Close()
	if s.answersSOA() {
		t.Fatal("named still answers after Close")
	}
}

func TestStartRejectsMissingOptions(t *testing.T) {
	if _, err := Start(Options{Zone: "example.test"}); err == nil || !strings.Contains(err.Error(), "required") {
		t.Fatalf("error %v", err)
	}
}
