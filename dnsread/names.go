package dnsread

import (
	"fmt"
	"strings"

	"github.com/tee-ingress/tee-ingress/internal/dnsname"
)

// ErrInvalidName is wrapped by every error about a malformed domain name.
var ErrInvalidName = dnsname.ErrInvalid

// Domain is a validated domain the ingress serves: a host name, or a wildcard
// "*.base" that covers exactly one label below base.
type Domain struct {
	// Name is the lowercase name without a trailing dot, "*.example.com" for a
	// wildcard.
	Name string
}

// Wildcard reports whether d is "*.base".
func (d Domain) Wildcard() bool { return strings.HasPrefix(d.Name, "*.") }

// Base is the name without the "*." of a wildcard (the name itself otherwise):
// where CAA for the wildcard lives (RFC 8659 section 3).
func (d Domain) Base() string { return strings.TrimPrefix(d.Name, "*.") }

func (d Domain) String() string { return d.Name }

// ParseDomain validates a domain name as DOMAIN or DOMAINS accept it: letters,
// digits and hyphens in labels of 1 to 63 characters, at least two labels,
// at most 253 characters, an optional trailing dot, and a wildcard only as the
// whole first label ("*.example.com"). IP addresses are refused: certificates
// and DNS records are for names.
func ParseDomain(s string) (Domain, error) {
	name, err := dnsname.Parse(s)
	if err != nil {
		return Domain{}, err
	}
	return Domain{Name: name}, nil
}

// CheckHostname checks name (no trailing dot) for DNS syntax. With
// underscores, labels may also contain "_" (service names like
// _dstack-app-address and gateway names like _.dstack-prod5.phala.network).
func CheckHostname(name string, underscores bool) error {
	return dnsname.CheckHostname(name, underscores)
}

// CheckLabel checks one label, as CheckHostname checks each.
func CheckLabel(label string, underscores bool) error { return dnsname.CheckLabel(label, underscores) }

// ParseHostname validates a name that is not one of our served domains (the
// gateway domain, a zone, an issuer): underscores allowed, no wildcard, one
// label allowed only if single is true. It returns the lowercase FQDN without
// the trailing dot.
func ParseHostname(what, s string, single bool) (string, error) {
	name := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
	if name == "" {
		return "", fmt.Errorf("%w: %s is empty", ErrInvalidName, what)
	}
	if err := CheckHostname(name, true); err != nil {
		return "", fmt.Errorf("%w: %s %q: %w", ErrInvalidName, what, s, err)
	}
	if !single && !strings.Contains(name, ".") {
		return "", fmt.Errorf("%w: %s %q has a single label (want a full name)", ErrInvalidName, what, s)
	}
	return name, nil
}

// FQDN returns name lowercased with exactly one trailing dot.
func FQDN(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, ".")) + "."
}

// Unfqdn returns name lowercased without the trailing dot.
func Unfqdn(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// InZone reports whether name (any dot form) is zone or below it.
func InZone(name, zone string) bool {
	n, z := FQDN(name), FQDN(zone)
	return n == z || strings.HasSuffix(n, "."+z)
}
