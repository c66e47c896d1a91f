// Command verifycli checks, from outside, that a tee-ingress deployment is
// what it claims to be: the certificate a domain serves is the one its
// evidence bundle publishes, the bundle is bound to a genuine TDX quote of the
// expected app, the domain's CAA record pins issuance to the TEE's ACME
// account, and the Certificate Transparency logs hold no certificate for the
// domain that the deployment cannot account for. It also checks dstack
// gateways, the attested self-signed mode, bundles on disk and single quotes.
//
// Run `verifycli -h` for the commands and flags. main.go parses the command
// line; each command lives in its own file (domain.go, gateway.go, tls.go,
// offline.go) and returns a list of evidence.Check that output.go prints as a
// numbered checklist or, with --json, as a report.Report. The exit status is 0
// when no check failed, 1 when one did, and 2 for usage, network or input
// errors.
package main
