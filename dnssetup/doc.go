// Package dnssetup brings the records a deployment needs into DNS when the
// ingress holds no DNS credential (DNS_SETUP_MODE print, wait, webhook, as
// dstack-ingress 2.3 names them): it renders them for the operator, posts
// them to the operator's webhook in dstack-ingress's signed and attested
// envelope, and waits until every resolver shows them. A CAA set that any
// resolver shows refusing this account stops the wait: ordering would
// fail at the CA anyway, and count against its limits.
package dnssetup
