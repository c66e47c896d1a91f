package main

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/dnsread"
	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/verifycli/report"
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
	set := &dnsread.CAASet{Records: []dnsread.CAARecord{
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

func TestColour(t *testing.T) {
	r := report.New("quote", "q.json", time.Now(), false, []evidence.Check{
		{Name: "a", Status: evidence.Pass}, {Name: "b", Status: evidence.Fail, Hint: "do x"}, {Name: "c", Status: evidence.Warn}})
	var plain, coloured strings.Builder
	if err := writeText(&plain, r, false); err != nil {
		t.Fatal(err)
	}
	if err := writeText(&coloured, r, true); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(plain.String(), "\x1b[") || !strings.Contains(plain.String(), "2. FAIL  b\n") || !strings.Contains(plain.String(), "hint   do x") {
		t.Errorf("plain output:\n%s", plain.String())
	}
	for _, want := range []string{"\x1b[32mPASS\x1b[0m", "\x1b[1;31mFAIL\x1b[0m", "\x1b[33mWARN\x1b[0m", "result: \x1b[1;31mFAIL\x1b[0m"} {
		if !strings.Contains(coloured.String(), want) {
			t.Errorf("coloured output lacks %q:\n%q", want, coloured.String())
		}
	}

	// Colour only for a terminal, and never with NO_COLOR or TERM=dumb.
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	none := func(string) (string, bool) { return "", false }
	if colorWanted(f, none) {
		t.Error("colour for a regular file")
	}
	tty := openPTY(t)
	if tty == nil {
		return
	}
	if !colorWanted(tty, none) {
		t.Error("no colour for a terminal")
	}
	if colorWanted(tty, func(k string) (string, bool) { return "", k == "NO_COLOR" }) {
		t.Error("colour despite NO_COLOR")
	}
	if colorWanted(tty, func(k string) (string, bool) { return "dumb", k == "TERM" }) {
		t.Error("colour despite TERM=dumb")
	}
}
