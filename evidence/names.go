package evidence

import (
	"github.com/tee-ingress/tee-ingress/internal/dnsname"
	"strings"
)

// Names of the bundle's fixed files (DESIGN.md section 7).
const (
	AccountFile   = "acme-account.json"
	CertFile      = "cert.pem"
	HistoryFile   = "history.json"
	SHA256SumFile = "sha256sum.txt"
	QuoteFile     = "quote.json"
)

// CertFileName is the bundle file holding domain's chain: "cert-<domain>.pem",
// the literal name, so "*.example.com" gives "cert-*.example.com.pem".
func CertFileName(domain string) string { return "cert-" + domain + ".pem" }

// IsBundleFileName reports whether name can be a file of a bundle: one of
// the fixed names or cert-<valid domain>.pem. Nothing else is ever served or
// written, which is what keeps paths like "../x" or "a/b" out.
func IsBundleFileName(name string) bool {
	switch name {
	case AccountFile, CertFile, HistoryFile, SHA256SumFile, QuoteFile:
		return true
	}
	d, ok := certFileDomain(name)
	return ok && ValidateDomain(d) == nil
}

// certFileDomain returns the domain of a "cert-<domain>.pem" name.
func certFileDomain(name string) (string, bool) {
	if !strings.HasPrefix(name, "cert-") || !strings.HasSuffix(name, ".pem") || len(name) <= len("cert-.pem") {
		return "", false
	}
	return name[len("cert-") : len(name)-len(".pem")], true
}

// ValidateDomain accepts a DNS name as a certificate covers it, in the form
// dnsname.Canonical gives it (lowercase, IDNs in xn-- form, no trailing dot,
// "*." only as the whole first label). A single label is accepted: a bundle
// may come from a test or private deployment serving "localhost".
func ValidateDomain(d string) error {
	return dnsname.Canonical(d, dnsname.SingleLabel)
}
