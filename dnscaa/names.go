package dnscaa

import (
	"strings"

	"github.com/tee-ingress/tee-ingress/dnsread"
)

// The rules for names are dnsread's, one implementation for the TEE's
// records and the verifier's lookups; these keep dnscaa's callers short.

// ErrInvalidName is wrapped by every error about a malformed domain name.
var ErrInvalidName = dnsread.ErrInvalidName

// Domain is a validated domain the ingress serves (dnsread.Domain).
type Domain = dnsread.Domain

// ParseDomain validates a domain name as DOMAIN or DOMAINS accept it
// (dnsread.ParseDomain).
func ParseDomain(s string) (Domain, error) { return dnsread.ParseDomain(s) }

func checkHostname(name string, underscores bool) error {
	return dnsread.CheckHostname(name, underscores)
}

func parseHostname(what, s string, single bool) (string, error) {
	return dnsread.ParseHostname(what, s, single)
}

func fqdn(name string) string   { return dnsread.FQDN(name) }
func unfqdn(name string) string { return dnsread.Unfqdn(name) }

func inZone(name, zone string) bool { return dnsread.InZone(name, zone) }

// relativeName returns name relative to zone, "@" for the apex. name must be
// in zone.
func relativeName(name, zone string) string {
	n, z := fqdn(name), fqdn(zone)
	if n == z {
		return "@"
	}
	return strings.TrimSuffix(n, "."+z)
}

// absoluteName returns the FQDN (with dot) of a record name the provider gave
// relative to zone: "@" or "" is the apex, a trailing dot marks a name that is
// already absolute.
func absoluteName(name, zone string) string {
	z := fqdn(zone)
	switch name {
	case "", "@":
		return z
	}
	if strings.HasSuffix(name, ".") {
		return fqdn(name)
	}
	// Every provider covered here returns names relative to the zone.
	n := strings.ToLower(name)
	return fqdn(n + "." + unfqdn(z))
}
