package evidence

import (
	"fmt"
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

// ValidateDomain accepts a DNS name as a certificate covers it: lowercase
// ASCII labels of letters, digits and hyphens (IDNs in xn-- form), each 1..63
// characters and not starting or ending with a hyphen, at most 253 characters
// in all, optionally starting with "*." for a wildcard. No trailing dot.
func ValidateDomain(d string) error {
	rest := strings.TrimPrefix(d, "*.")
	if rest == "" {
		return fmt.Errorf("domain %q is empty; want a DNS name like example.com or *.example.com", d)
	}
	if len(d) > 253 {
		return fmt.Errorf("domain %q is %d characters long; at most 253 accepted", truncate(d), len(d))
	}
	for _, label := range strings.Split(rest, ".") {
		if label == "" {
			return fmt.Errorf("domain %q has an empty label; want a DNS name like example.com (no leading, trailing or double dots)", d)
		}
		if len(label) > 63 {
			return fmt.Errorf("domain %q has a label longer than 63 characters", d)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("domain %q has a label starting or ending with a hyphen", d)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return fmt.Errorf("domain %q contains %q; accepted are lowercase letters, digits, hyphens, dots and a leading \"*.\"", d, string(rune(c)))
			}
		}
	}
	return nil
}
