package dnscaa

import (
	"errors"
	"strings"
	"testing"
)

func TestParseDomain(t *testing.T) {
	good := map[string]string{
		"App.Example.COM.":             "app.example.com",
		" app.example.com ":            "app.example.com",
		"*.example.com":                "*.example.com",
		"xn--bcher-kva.example":        "xn--bcher-kva.example",
		"a-b.c-d.example":              "a-b.c-d.example",
		strings.Repeat("a", 63) + ".x": strings.Repeat("a", 63) + ".x",
	}
	for in, want := range good {
		d, err := ParseDomain(in)
		if err != nil {
			t.Errorf("ParseDomain(%q): %v", in, err)
			continue
		}
		if d.Name != want {
			t.Errorf("ParseDomain(%q) = %q, want %q", in, d.Name, want)
		}
	}
	d, _ := ParseDomain("*.apps.example.com")
	if !d.Wildcard() || d.Base() != "apps.example.com" {
		t.Errorf("wildcard: Wildcard=%v Base=%q", d.Wildcard(), d.Base())
	}

	bad := map[string]string{
		"":                                    "empty",
		"localhost":                           "single label",
		"192.0.2.1":                           "IP address",
		"app..example.com":                    "empty label",
		"app.*.example.com":                   "wildcard that is not the whole first label",
		"*app.example.com":                    "wildcard that is not the whole first label",
		"*.*.example.com":                     "wildcard that is not the whole first label",
		"*.com":                               "base of at least two labels",
		"-app.example.com":                    "hyphen",
		"app_x.example.com":                   `character "_"`,
		"app.example.com/path":                `character "/"`,
		"https://app.example.com":             `character ":"`,
		strings.Repeat("a", 64) + ".x":        "longer than 63",
		strings.Repeat("abcdefgh.", 32) + "x": "longer than 253",
	}
	for in, want := range bad {
		_, err := ParseDomain(in)
		if err == nil {
			t.Errorf("ParseDomain(%q) accepted", in)
			continue
		}
		if !errors.Is(err, ErrInvalidName) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseDomain(%q) = %v, want an ErrInvalidName mentioning %q", in, err, want)
		}
	}
}

func TestNameHelpers(t *testing.T) {
	if got := relativeName("a.b.example.com", "example.com."); got != "a.b" {
		t.Errorf("relativeName = %q", got)
	}
	if got := relativeName("example.com.", "example.com"); got != "@" {
		t.Errorf("relativeName apex = %q", got)
	}
	for _, c := range []struct{ name, zone, want string }{
		{"@", "example.com", "example.com."},
		{"", "example.com.", "example.com."},
		{"www", "example.com", "www.example.com."},
		{"WWW.example.com.", "example.com", "www.example.com."},
		{"www.example.com", "example.com", "www.example.com.example.com."},
	} {
		if got := absoluteName(c.name, c.zone); got != c.want {
			t.Errorf("absoluteName(%q, %q) = %q, want %q", c.name, c.zone, got, c.want)
		}
	}
	if inZone("badexample.com", "example.com") || !inZone("a.example.com.", "example.com") || !inZone("example.com", "example.com.") {
		t.Error("inZone")
	}
}
