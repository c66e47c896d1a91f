// Package dnsread reads DNS and nothing else: a small resolver (configured
// or system servers, CNAME chains, zone cuts, authoritative servers), the
// rules for domain names (ParseDomain, one implementation for the whole
// module), and CAA record sets (RFC 8659): their lookup at the relevant
// name, the issue value's syntax and a check against the policy the
// deployment pins (one issuer, one ACME account, its validation methods,
// RFC 8657). The TEE side (dnscaa, which writes records) and the auditor's
// verifier both use it; it imports no DNS provider.
//
// Start with LookupCAA and CheckCAA, or ParseDomain.
package dnsread
