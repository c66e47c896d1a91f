// Package evidence is the TEE side of tee-ingress's proof: it talks to the dstack
// guest agent (identity, quotes, KMS-derived keys), builds and publishes the
// /evidences/ bundle (acme-account.json, certificates, history.json,
// sha256sum.txt and quote.json, whose report_data binds sha256sum.txt), serves
// it over HTTP, and verifies bundles and quotes for verifycli.
//
// Start with Bundle (what is published), Handler (how it is served) and
// VerifyBundle (how an auditor checks it).
package evidence
