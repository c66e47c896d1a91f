package dnsname

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		opts []Option
		want string // "" = refused
		why  string // part of the error
	}{
		{in: "app.example.com", want: "app.example.com"},
		{in: " App.Example.COM. ", want: "app.example.com"},
		{in: "*.example.com", want: "*.example.com"},
		{in: "Bücher.example", want: "xn--bcher-kva.example"},
		{in: "*.Bücher.example", want: "*.xn--bcher-kva.example"},
		{in: "xn--bcher-kva.example", want: "xn--bcher-kva.example"},
		{in: "", why: "empty"},
		{in: "192.0.2.1", why: "IP address"},
		{in: "::1", why: "IP address"},
		{in: "localhost", why: "single label"},
		{in: "localhost", opts: []Option{SingleLabel}, want: "localhost"},
		{in: "*.com", why: "wildcard needs a base of at least two labels"},
		{in: "a.*.example.com", why: "not the whole first label"},
		{in: "*x.example.com", why: "not the whole first label"},
		{in: "**.example.com", why: "not the whole first label"},
		{in: "*.example.com", opts: []Option{NoWildcard}, why: "wildcard is not accepted"},
		{in: "a..example.com", why: "empty label"},
		{in: "-a.example.com", why: "hyphen"},
		{in: "a-.example.com", why: "hyphen"},
		{in: "_svc.example.com", why: "character"},
		{in: "_svc.example.com", opts: []Option{Underscores}, want: "_svc.example.com"},
		{in: strings.Repeat("a", 64) + ".example.com", why: "longer than 63"},
		{in: strings.Repeat("a.", 127) + "com", why: "longer than 253"},
		{in: "exa mple.com", why: "character"},
	} {
		got, err := Parse(c.in, c.opts...)
		switch {
		case c.want != "" && (err != nil || got != c.want):
			t.Errorf("Parse(%q) = %q, %v; want %q", c.in, got, err, c.want)
		case c.want == "" && (err == nil || !strings.Contains(err.Error(), c.why)):
			t.Errorf("Parse(%q) = %q, %v; want an error with %q", c.in, got, err, c.why)
		}
	}
	if err := Canonical("App.example.com"); err == nil {
		t.Error("Canonical accepted an uppercase name")
	}
	if err := Canonical("app.example.com"); err != nil {
		t.Error(err)
	}
}

func TestCovers(t *testing.T) {
	for _, c := range []struct {
		pattern, name string
		want          bool
	}{
		{"a.b", "a.b", true},
		{"*.a.b", "x.a.b", true},
		{"*.a.b", "a.b", false},
		{"*.a.b", "y.x.a.b", false},
		{"*.a.b", "*.a.b", true},
		{"*.a.b", "*.x.a.b", false},
		{"x.a.b", "*.a.b", false},
		{"*.a.b", "xa.b", false},
		{"*.a.b", ".a.b", false},
		{"a.b", "c.b", false},
	} {
		if got := Covers(c.pattern, c.name); got != c.want {
			t.Errorf("Covers(%q, %q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
}

// FuzzParse: any input either fails or parses to a canonical name that
// parses to itself, and a wildcard covers exactly the names one label
// below its base.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"app.example.com", "*.Bücher.example", "a..b", "*.*.x", "x.", "1.2.3.4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Parse(s, Underscores)
		if err != nil {
			return
		}
		if m, err := Parse(n, Underscores); err != nil || m != n {
			t.Fatalf("%q -> %q -> %q, %v", s, n, m, err)
		}
		if base, ok := strings.CutPrefix(n, "*."); ok {
			if !Covers(n, "x."+base) || Covers(n, base) || Covers(n, "y.x."+base) {
				t.Fatalf("wildcard %q covers wrongly", n)
			}
		}
	})
}
