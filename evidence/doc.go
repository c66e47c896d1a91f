// Package evidence is tee-ingress's proof and its verification: the formats
// of the /evidences/ bundle (acme-account.json, certificates, history.json,
// sha256sum.txt and quote.json, whose report_data binds sha256sum.txt), how
// the TEE builds, publishes and serves it, and how an auditor checks bundles
// and TDX quotes (verifycli). It does not talk to the guest agent: that is
// package agent, which the TEE side wires in as a Quoter, so an auditor's
// verifier links none of it.
//
// Start with Bundle (what is published), Handler (how it is served) and
// VerifyBundle (how an auditor checks it).
package evidence
