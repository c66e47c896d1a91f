// Package dnscaa is everything the ingress writes to or reads from DNS: the
// gateway records that route a custom domain through the dstack gateway (a
// CNAME and a `_dstack-app-address` TXT), the CAA records that pin certificate
// issuance to the TEE's ACME account, the DNS-01 challenge records lego asks
// for, and the CAA reading the verifier does.
//
// Where to start reading:
//
//   - NewProvider builds a libdns provider by name (cloudflare, route53,
//     linode, namecheap, rfc2136, or auto) from credential variables looked up
//     through a function, never from the environment directly. The returned
//     *Client runs every provider call under a deadline, converts zone names
//     to the form each provider expects, and keeps secrets out of errors.
//   - NewPlan turns the configuration (domains, GATEWAY_DOMAIN, TXT_PREFIX,
//     app id and port, CAA policy, DELEGATION_ZONE) into the exact records of
//     DESIGN.md section 5 and validates all of it without any I/O. Preview shows
//     the changes a plan needs; Apply makes them idempotently (no write when
//     everything is already right), never touching records it does not own,
//     and reads the zone back afterwards.
//   - NewChallengeProvider is lego's DNS-01 challenge.Provider on top of a
//     Client: it writes and removes exactly its own TXT value, follows a CNAME
//     on `_acme-challenge`, and waits until the zone's authoritative servers
//     (or configured servers) answer the value.
//   - Pinner writes the CAA record that pins issuance to one account; reading
//     and checking CAA sets (RFC 8659, RFC 8657) is package dnsread's, which
//     the verifier shares.
//
// Provider quirks that shaped this package, each handled where it applies:
// libdns/cloudflare v0.2.2 updates one record per call, so a multi-record set
// is written with AppendRecords and removed with DeleteRecords, never with
// SetRecords; libdns/namecheap v1.0.0 rewrites the whole host list on every
// change and cannot carry MX settings through it, so writes are refused when
// the zone holds records it would drop; libdns/route53 v1.6.0 cannot add a
// value to an existing record set, so appends merge the set through the
// Route 53 API; libdns/linode v0.5.0 replaces the process-wide slog default
// (undone after its first call) and silently skips records it fails to
// create (the Client checks the count). An RRset has one TTL, so a CAA record
// joining others (an iodef) takes their TTL instead of 60 s, leaving them
// exactly as they were.
package dnscaa
