package main

import (
	"slices"
	"testing"

	"github.com/tee-ingress/tee-ingress/dnscaa"
)

func TestCoversName(t *testing.T) {
	for _, tc := range []struct {
		cert, name string
		want       bool
	}{
		{"app.example.com", "app.example.com", true},
		{"*.example.com", "app.example.com", true},
		{"*.example.com", "a.b.example.com", false},
		{"*.example.com", "example.com", false},
		{"*.example.com", "*.example.com", true},
		{"app.example.com", "*.example.com", false},
		{"other.example.com", "app.example.com", false},
	} {
		if got := coversName(tc.cert, tc.name); got != tc.want {
			t.Errorf("coversName(%q, %q) = %v", tc.cert, tc.name, got)
		}
	}
}

func TestCTQueryNames(t *testing.T) {
	for name, want := range map[string][]string{
		"app.example.com": {"app.example.com", "*.example.com"},
		"example.com":     {"example.com"},
		"*.example.com":   {"*.example.com"},
	} {
		if got := ctQueryNames(name); !slices.Equal(got, want) {
			t.Errorf("ctQueryNames(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestNormSerial(t *testing.T) {
	for in, want := range map[string]string{"00c0ffee": "c0ffee", "03B5": "3b5", "0": "0", "000": "0", "abc": "abc"} {
		if got := normSerial(in); got != want {
			t.Errorf("normSerial(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseCTTime(t *testing.T) {
	for _, s := range []string{"2020-03-06T23:14:48", "2020-03-06T23:14:48.255", "2020-03-06T23:14:48Z", "2020-03-07T00:14:48+01:00"} {
		got, err := parseCTTime(s)
		if err != nil || got.Unix() != 1583536488 {
			t.Errorf("parseCTTime(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := parseCTTime("yesterday"); err == nil {
		t.Error("parseCTTime accepted yesterday")
	}
}

func TestCAAIssuer(t *testing.T) {
	set := &dnscaa.CAASet{Records: []dnscaa.CAARecord{
		{Tag: "issue", Value: "other.example;accounturi=https://ca.example/acct/9"},
		{Tag: "issuewild", Value: "Pebble.Example; accounturi=https://ca.example/acct/1"},
	}}
	for _, tc := range []struct{ flag, account, want string }{
		{"ca.example", "https://ca.example/acct/1", "ca.example"},
		{"", "https://acme-v02.api.letsencrypt.org/acme/acct/5", "letsencrypt.org"},
		{"", "https://acme-staging-v02.api.letsencrypt.org/acme/acct/5", "letsencrypt.org"},
		{"", "https://ca.example/acct/1", "pebble.example"},
		{"", "https://ca.example/acct/2", ""},
	} {
		if got, _ := caaIssuer(tc.flag, tc.account, set); got != tc.want {
			t.Errorf("caaIssuer(%q, %q) = %q, want %q", tc.flag, tc.account, got, tc.want)
		}
	}
}

func TestShorten(t *testing.T) {
	h64 := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	if got := shorten("sha256 " + h64); got != "sha256 "+h64 {
		t.Errorf("a SHA-256 was shortened: %q", got)
	}
	if got := shorten("rd " + h64 + "00"); got != "rd 0123456789abcdef...abcdef00" {
		t.Errorf("shorten = %q", got)
	}
}

func TestParseArgsAnywhere(t *testing.T) {
	o, cmd, arg, err := parseArgs([]string{"--json", "quote", "--strict", "q.json", "--timeout", "5s"})
	if err != nil || cmd != "quote" || arg != "q.json" || !o.json || !o.strict || o.timeout.String() != "5s" {
		t.Fatalf("parseArgs: %+v %q %q %v", o, cmd, arg, err)
	}
	if _, _, arg, err := parseArgs([]string{"quote", "--", "--odd-name.json"}); err != nil || arg != "--odd-name.json" {
		t.Fatalf("after --: %q %v", arg, err)
	}
	if o, _, _, _ := parseArgs([]string{"domain", "https://x.example", "--ct-url", "OFF", "--validation-methods", "DNS-01, tls-alpn-01"}); o.ctURL != "" || !slices.Equal(o.methods, []string{"dns-01", "tls-alpn-01"}) {
		t.Fatalf("ct %q methods %q", o.ctURL, o.methods)
	}
}
