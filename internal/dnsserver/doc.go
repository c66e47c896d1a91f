// Package dnsserver is a small authoritative DNS server for tests and `ingress
// --dev`: it stands in for the public DNS that a TEE's records end up in, so
// that lego, pebble's validation authority and the verifier can query real
// records over real UDP and TCP on loopback.
//
// Start a Server for one or more zones, write records with Add and Remove (or
// through the Cloudflare emulator in internal/cfemu, which is backed by a
// Server), and point resolvers at Addr. SetHide simulates records that never
// propagate; All gives a sorted snapshot for "nothing else changed" assertions.
//
// It answers like an authoritative server for its zones and nothing more:
// exact matches, CNAME chains within its zones, wildcards, NXDOMAIN/NODATA with
// the zone's SOA, REFUSED elsewhere. It has no DNSSEC, no zone transfers and no
// dynamic updates (tests that need RFC 2136 use BIND9).
package dnsserver
