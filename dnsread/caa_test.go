package dnsread

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tee-ingress/tee-ingress/internal/dnsserver"
)

func TestParseIssueValue(t *testing.T) {
	good := []struct {
		in   string
		want IssueValue
		out  string
	}{
		{"letsencrypt.org", IssueValue{Issuer: "letsencrypt.org"}, "letsencrypt.org"},
		{";", IssueValue{}, ";"},
		{"", IssueValue{}, ";"},
		{"  ;  ", IssueValue{}, ";"},
		{"ca.example; accounturi = https://ca.example/acct/1 ; validationmethods=dns-01,http-01 ",
			IssueValue{Issuer: "ca.example", Params: []CAAParam{{"accounturi", "https://ca.example/acct/1"}, {"validationmethods", "dns-01,http-01"}}},
			"ca.example;accounturi=https://ca.example/acct/1;validationmethods=dns-01,http-01"},
		{"letsencrypt.org;validationmethods=dns-01;accounturi=https://acme-v02.api.letsencrypt.org/acme/acct/1",
			IssueValue{Issuer: "letsencrypt.org", Params: []CAAParam{{"validationmethods", "dns-01"}, {"accounturi", "https://acme-v02.api.letsencrypt.org/acme/acct/1"}}},
			"letsencrypt.org;validationmethods=dns-01;accounturi=https://acme-v02.api.letsencrypt.org/acme/acct/1"},
		{"pki.goog; cansignhttpexchanges=yes", IssueValue{Issuer: "pki.goog", Params: []CAAParam{{"cansignhttpexchanges", "yes"}}}, "pki.goog;cansignhttpexchanges=yes"},
		{"; key=", IssueValue{Params: []CAAParam{{"key", ""}}}, ";key="},
		{"a--b.example", IssueValue{Issuer: "a--b.example"}, "a--b.example"},
	}
	for _, c := range good {
		v, err := ParseIssueValue(c.in)
		if err != nil {
			t.Errorf("ParseIssueValue(%q): %v", c.in, err)
			continue
		}
		if !reflect.DeepEqual(v, c.want) {
			t.Errorf("ParseIssueValue(%q) = %#v, want %#v", c.in, v, c.want)
		}
		if v.String() != c.out {
			t.Errorf("String() = %q, want %q", v.String(), c.out)
		}
	}
	bad := []string{
		"-ca.example", "ca.example.", "ca..example", "ca.example extra", "ca.example;accounturi",
		"ca.example;=x", "ca.example;a=b c", "ca.example;a=b;a=c", "ca.example;AccountURI=x;accounturi=y",
		"ca.example;a=\x7f", "ca_example", `"ca.example"`,
	}
	for _, in := range bad {
		if v, err := ParseIssueValue(in); err == nil || !errors.Is(err, ErrMalformedCAA) {
			t.Errorf("ParseIssueValue(%q) = %#v, %v; want ErrMalformedCAA", in, v, err)
		}
	}
}

// FuzzParseIssueValue: no input panics; an accepted value re-encodes to a
// canonical form that parses to the same value and re-encodes to the same
// bytes; a canonical input re-encodes to itself.
func FuzzParseIssueValue(f *testing.F) {
	for _, s := range []string{
		"letsencrypt.org", ";", "", "ca.example; accounturi=https://x/1 ; validationmethods=dns-01",
		"letsencrypt.org;validationmethods=dns-01;accounturi=https://acme-v02.api.letsencrypt.org/acme/acct/1",
		"a;b=;c=d", "\t x.y \t; k = v ", "x;k=v;k=w", "-",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseIssueValue(s)
		if err != nil {
			return
		}
		enc := v.String()
		v2, err := ParseIssueValue(enc)
		if err != nil {
			t.Fatalf("canonical %q of %q does not parse: %v", enc, s, err)
		}
		if v2.String() != enc {
			t.Fatalf("canonical form not stable: %q -> %q", enc, v2.String())
		}
		if !reflect.DeepEqual(v, v2) && !(v.Issuer == "" && len(v.Params) == 0) {
			t.Fatalf("round trip of %q: %#v != %#v", s, v, v2)
		}
		if strings.ContainsAny(enc, " \t") {
			t.Fatalf("canonical %q has whitespace", enc)
		}
		// Spaces and an empty parameter list ("ca.example;") are the only
		// things the canonical form drops.
		if !strings.ContainsAny(s, " \t") && s != "" && s != enc && s != enc+";" {
			t.Fatalf("canonical input %q re-encodes to %q", s, enc)
		}
	})
}

func TestCheckCAA(t *testing.T) {
	want := CAAPolicy{IssuerDomain: "letsencrypt.org", AccountURI: testAccount}
	ours := "letsencrypt.org;validationmethods=dns-01;accounturi=" + testAccount
	set := func(name string, recs ...CAARecord) *CAASet {
		return &CAASet{Name: name, Owner: strings.TrimPrefix(name, "*."), Records: recs}
	}
	cases := []struct {
		name    string
		set     *CAASet
		ok      bool
		tag     string
		problem string
	}{
		{"pinned", set("app.example.", CAARecord{0, "issue", ours}, CAARecord{0, "iodef", "mailto:x@example"}), true, "issue", ""},
		{"pinned plus no-issuer record", set("app.example.", CAARecord{0, "issue", ours}, CAARecord{0, "issue", ";"}), true, "issue", ""},
		{"other CA too", set("app.example.", CAARecord{0, "issue", ours}, CAARecord{0, "issue", "pki.goog"}), false, "issue", "another CA"},
		{"any account", set("app.example.", CAARecord{0, "issue", "letsencrypt.org"}), false, "issue", "any account"},
		{"other account", set("app.example.", CAARecord{0, "issue", "letsencrypt.org;accounturi=https://acme.example/acct/9;validationmethods=dns-01"}), false, "issue", "another account"},
		{"any method", set("app.example.", CAARecord{0, "issue", "letsencrypt.org;accounturi=" + testAccount}), false, "issue", "any validation method"},
		{"http-01 allowed", set("app.example.", CAARecord{0, "issue", "letsencrypt.org;accounturi=" + testAccount + ";validationmethods=dns-01,http-01"}), false, "issue", "http-01"},
		{"nothing", set("app.example."), false, "issue", "any CA may issue"},
		{"iodef only", set("app.example.", CAARecord{0, "iodef", "mailto:x@example"}), false, "issue", "no issue records"},
		{"nobody", set("app.example.", CAARecord{0, "issue", ";"}), false, "issue", "grants"},
		{"malformed grants nothing", set("app.example.", CAARecord{0, "issue", ours}, CAARecord{0, "issue", "bad value!"}), true, "issue", ""},
		{"critical unknown tag", set("app.example.", CAARecord{0, "issue", ours}, CAARecord{128, "future", "x"}), false, "issue", "critical"},
		{"critical known tag is fine", set("app.example.", CAARecord{128, "issue", ours}), true, "issue", ""},
		{"wildcard uses issuewild", set("*.example.", CAARecord{0, "issue", "pki.goog"}, CAARecord{0, "issuewild", ours}), true, "issuewild", ""},
		{"wildcard falls back to issue", set("*.example.", CAARecord{0, "issue", ours}), true, "issue", ""},
		{"wildcard issuewild other CA", set("*.example.", CAARecord{0, "issue", ours}, CAARecord{0, "issuewild", "pki.goog"}), false, "issuewild", "another CA"},
		{"non-wildcard ignores issuewild", set("example.", CAARecord{0, "issue", ours}, CAARecord{0, "issuewild", "pki.goog"}), true, "issue", ""},
		{"case-insensitive issuer", set("app.example.", CAARecord{0, "issue", "LetsEncrypt.org;validationmethods=DNS-01;accounturi=" + testAccount}), true, "issue", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := CheckCAA(c.set, want)
			if res.OK() != c.ok || res.Tag != c.tag {
				t.Fatalf("OK=%v tag=%s, want %v %s; problems: %v", res.OK(), res.Tag, c.ok, c.tag, res.Problems)
			}
			if c.problem != "" && !strings.Contains(strings.Join(res.Problems, "\n"), c.problem) {
				t.Errorf("problems %q do not mention %q", res.Problems, c.problem)
			}
			if res.Want != ours {
				t.Errorf("Want = %q", res.Want)
			}
			if len(res.Findings) != len(c.set.Records) {
				t.Errorf("%d findings for %d records", len(res.Findings), len(c.set.Records))
			}
		})
	}
}

const testAccount = "https://acme.example/acme/acct/1234"

func startDNS(t *testing.T, zones ...string) *dnsserver.Server {
	t.Helper()
	s, err := dnsserver.Start(zones...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestLookupCAA(t *testing.T) {
	s := startDNS(t, "example.test", "other.test")
	ours := "letsencrypt.org;validationmethods=dns-01;accounturi=" + testAccount
	s.Add(
		dnsserver.MustRR(`example.test. 60 IN CAA 0 issue "pki.goog"`),
		dnsserver.MustRR(`example.test. 60 IN CAA 0 iodef "mailto:sec@example.test"`),
		dnsserver.MustRR(`app.example.test. 60 IN CAA 0 issue "`+ours+`"`),
		dnsserver.MustRR(`apps.example.test. 60 IN CAA 0 issuewild "`+ours+`"`),
		dnsserver.MustRR(`alias.example.test. 60 IN CNAME target.other.test.`),
		dnsserver.MustRR(`target.other.test. 60 IN CAA 0 issue "`+ours+`"`),
		dnsserver.MustRR(`dangling.example.test. 60 IN CNAME nowhere.other.test.`),
		dnsserver.MustRR(`out.example.test. 60 IN CNAME elsewhere.invalid.`),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cases := []struct {
		name, owner string
		searched    int
		aliases     []string
		values      []string
	}{
		{"app.example.test", "app.example.test.", 1, nil, []string{ours}},
		{"deep.x.app.example.test", "app.example.test.", 3, nil, []string{ours}},
		{"*.apps.example.test", "apps.example.test.", 1, nil, []string{ours}},
		{"www.example.test", "example.test.", 2, nil, []string{"pki.goog", "mailto:sec@example.test"}},
		// CAA(X) follows the CNAME at X ...
		{"alias.example.test", "alias.example.test.", 1, []string{"target.other.test."}, []string{ours}},
		// ... but the climb goes on from X's parent, not the target's.
		{"dangling.example.test", "example.test.", 2, nil, []string{"pki.goog", "mailto:sec@example.test"}},
		// A chain leaving the served zones is asked for again at its end
		// (refused here, so no records there).
		{"out.example.test", "example.test.", 2, nil, []string{"pki.goog", "mailto:sec@example.test"}},
	}
	for _, c := range cases {
		set, err := LookupCAA(ctx, s.Addr(), c.name)
		if err != nil {
			t.Errorf("LookupCAA(%s): %v", c.name, err)
			continue
		}
		var values []string
		for _, r := range set.Records {
			values = append(values, r.Value)
		}
		if set.Owner != c.owner || len(set.Searched) != c.searched || !reflect.DeepEqual(set.Aliases, c.aliases) || !reflect.DeepEqual(values, c.values) {
			t.Errorf("LookupCAA(%s) = owner %s searched %v aliases %v values %q; want %s, %d names, %v, %q",
				c.name, set.Owner, set.Searched, set.Aliases, values, c.owner, c.searched, c.aliases, c.values)
		}
	}

	// Nothing anywhere: the climb reaches the top and the set is empty.
	set, err := LookupCAA(ctx, s.Addr(), "x.other.test")
	if err != nil {
		t.Fatal(err)
	}
	if set.Owner != "" || len(set.Records) != 0 || !reflect.DeepEqual(set.Searched, []string{"x.other.test.", "other.test.", "test."}) {
		t.Errorf("empty lookup: %+v", set)
	}
	if len(set.Notes) == 0 {
		t.Error("no note about the refused name")
	}
	if CheckCAA(set, CAAPolicy{IssuerDomain: "letsencrypt.org", AccountURI: testAccount}).OK() {
		t.Error("empty set passed the check")
	}

	if _, err := LookupCAA(ctx, s.Addr(), "bad..name"); !errors.Is(err, ErrInvalidName) {
		t.Errorf("bad name: %v", err)
	}
}

func TestLookupCAAServerFailure(t *testing.T) {
	// A server that answers SERVFAIL: the lookup fails (a CA must not
	// issue), quickly.
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeServerFailure)
		_ = w.WriteMsg(m)
	})
	srv := &dns.Server{Addr: "127.0.0.1:0", Net: "udp", Handler: mux}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ListenAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	addr := srv.PacketConn.LocalAddr().String()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := LookupCAA(ctx, addr, "app.example.test")
	if err == nil || !strings.Contains(err.Error(), "SERVFAIL") || !strings.Contains(err.Error(), "app.example.test") {
		t.Fatalf("err = %v, want a SERVFAIL error naming the name", err)
	}
	if time.Since(start) > 15*time.Second {
		t.Errorf("took %s", time.Since(start))
	}
}
