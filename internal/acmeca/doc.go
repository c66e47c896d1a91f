// Package acmeca runs pebble (github.com/letsencrypt/pebble/v2), Let's
// Encrypt's ACME test CA, in-process as the stand-in for Let's Encrypt in
// tests and `ingress --dev`. Its validation authority resolves DNS-01
// challenges against the DNS server named in Options.DNSAddr (normally an
// internal/dnsserver), so issuance runs end to end on loopback.
//
// Start a CA, give an ACME client DirectoryURL and HTTPClient, and verify
// what it issues against Roots. Around pebble's handler the CA counts new
// orders (Orders), keeps the ARI "replaces" field of the latest one
// (LastReplaces), injects rateLimited errors (RateLimitNextOrders), sets ARI
// windows (SetRenewalInfo) and adds "Retry-After: 1" to challenge,
// authorization and order responses that lack one, because lego otherwise
// waits 5 s before polling a validation that pebble finishes in milliseconds.
// It also files each replaced order under the DER form of its serial, so
// that pebble's "replaces" lookup does not fail for one serial in 256
// (letsencrypt/pebble#550; see aliasSignedSerial).
//
// Pebble reads its settings from environment variables in its constructors;
// Start sets PEBBLE_VA_NOSLEEP=1, PEBBLE_VA_ALWAYS_VALID=0,
// PEBBLE_WFE_NONCEREJECT=0 and PEBBLE_AUTHZREUSE around them (under a lock,
// restoring the previous values), an exception to "only cmd/ingress reads the
// environment" that is acceptable for a test and development stand-in.
// Pebble's validation authority starts a goroutine that has no way to stop;
// each CA leaves that one idle goroutine behind after Close.
package acmeca
