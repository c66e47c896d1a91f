// Package dnsname holds the one implementation of the domain-name rules the
// ingress and its verifier share: what a served name is (Parse), and which
// names a certificate or route name covers (Covers). They must agree by
// construction: an ingress and a verifier that disagree about which names a
// certificate covers is a hole.
package dnsname

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
)

// ErrInvalid is wrapped by every error about a malformed name.
var ErrInvalid = errors.New("invalid domain name")

// Option relaxes Parse.
type Option int

const (
	// Underscores allows "_" in labels (service names like
	// _dstack-app-address, gateway names like _.dstack-prod5.phala.network).
	Underscores Option = 1 << iota
	// SingleLabel allows a name of one label (a zone, an issuer).
	SingleLabel
	// NoWildcard refuses "*.".
	NoWildcard
)

// Parse normalises and validates a name: surrounding space and one trailing
// dot dropped, lowercased, Unicode labels to their xn-- form (IDNA 2008,
// lookup profile); then labels of 1 to 63 letters, digits and inner
// hyphens, at most 253 characters, at least two labels, and "*" only as the
// whole first label. IP addresses are refused: certificates and DNS records
// here are for names.
func Parse(s string, opts ...Option) (string, error) {
	var o Option
	for _, x := range opts {
		o |= x
	}
	name := strings.TrimSuffix(strings.TrimSpace(s), ".")
	if name == "" {
		return "", fmt.Errorf("%w: empty (want a host name like app.example.com or *.example.com)", ErrInvalid)
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return "", fmt.Errorf("%w: %s is an IP address (want a host name like app.example.com)", ErrInvalid, quote(s))
	}
	wild := strings.HasPrefix(name, "*.")
	if wild && o&NoWildcard != 0 {
		return "", fmt.Errorf("%w: %s: a wildcard is not accepted here", ErrInvalid, quote(s))
	}
	base := strings.TrimPrefix(name, "*.")
	if strings.Contains(base, "*") {
		return "", fmt.Errorf("%w: %s has a wildcard that is not the whole first label (want *.example.com)", ErrInvalid, quote(s))
	}
	base, err := toASCII(base)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrInvalid, quote(s), err)
	}
	if err := CheckHostname(base, o&Underscores != 0); err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrInvalid, quote(s), err)
	}
	if o&SingleLabel == 0 && !strings.Contains(base, ".") {
		if wild {
			return "", fmt.Errorf("%w: %s: a wildcard needs a base of at least two labels (want *.example.com)", ErrInvalid, quote(s))
		}
		return "", fmt.Errorf("%w: %s has a single label (want a full name like app.example.com)", ErrInvalid, quote(s))
	}
	if wild {
		return "*." + base, nil
	}
	return base, nil
}

// quote quotes a name for an error, cut to 80 bytes: names come from
// untrusted certificates and bundles, and an error must stay readable.
func quote(s string) string {
	if len(s) > 80 {
		return fmt.Sprintf("%q... (%d bytes)", s[:80], len(s))
	}
	return fmt.Sprintf("%q", s)
}

// toASCII lowercases ASCII names and maps others through IDNA.
func toASCII(name string) (string, error) {
	for i := 0; i < len(name); i++ {
		if name[i] >= 0x80 {
			a, err := idna.Lookup.ToASCII(name)
			if err != nil {
				return "", fmt.Errorf("not a valid internationalised name (%v)", err)
			}
			return a, nil
		}
	}
	return strings.ToLower(name), nil
}

// Canonical says whether s is already in the form Parse returns: what a
// name inside a certificate, a bundle or a route table must be.
func Canonical(s string, opts ...Option) error {
	n, err := Parse(s, opts...)
	if err != nil {
		return err
	}
	if n != s {
		return fmt.Errorf("%w: %s is not in canonical form (want %s: lowercase, xn-- labels, no trailing dot)", ErrInvalid, quote(s), quote(n))
	}
	return nil
}

// CheckHostname checks a lowercase name without a trailing dot for DNS
// syntax, label by label.
func CheckHostname(name string, underscores bool) error {
	if len(name) > 253 {
		return fmt.Errorf("longer than 253 characters")
	}
	for _, label := range strings.Split(name, ".") {
		if err := CheckLabel(label, underscores); err != nil {
			return err
		}
	}
	return nil
}

// CheckLabel checks one label: 1 to 63 of a-z, 0-9, inner hyphens (and "_"
// with underscores).
func CheckLabel(label string, underscores bool) error {
	if label == "" {
		return fmt.Errorf("empty label")
	}
	if len(label) > 63 {
		return fmt.Errorf("label %q longer than 63 characters", label)
	}
	for i := 0; i < len(label); i++ {
		c := label[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-':
			if i == 0 || i == len(label)-1 {
				return fmt.Errorf("label %q starts or ends with a hyphen", label)
			}
		case c == '_' && underscores:
		default:
			return fmt.Errorf("label %q has character %q (allowed: a-z, 0-9, hyphen)", label, string(rune(c)))
		}
	}
	return nil
}

// Covers reports whether a certificate or route for pattern serves name
// (both canonical): equal names, or pattern "*.B" and name one label below
// B. "*.a.b" covers "x.a.b", not "a.b", "y.x.a.b" nor "*.a.b" as a
// different wildcard; a wildcard name is covered only by itself.
func Covers(pattern, name string) bool {
	if pattern == name {
		return true
	}
	base, ok := strings.CutPrefix(pattern, "*.")
	if !ok || strings.HasPrefix(name, "*.") {
		return false
	}
	i := strings.IndexByte(name, '.')
	return i > 0 && name[i+1:] == base
}
