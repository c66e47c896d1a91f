// Package acme runs the certificate lifecycle of tee-ingress on lego: the ACME
// account (its key from a KeySource, so a KMS-derived key keeps the account URI
// and therefore the CAA pin stable across redeploys), issuance per domain set,
// atomic storage under the state directory, reuse of stored certificates on
// start, and renewal decisions (ARI, a fixed window, or a third of the lifetime
// left) with backoff that keeps serving the current certificate.
//
// Start with Config and Manager: Manager.Account, Manager.Ensure and
// Manager.Run are what cmd/ingress calls.
package acme
