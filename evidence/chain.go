package evidence

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/tee-ingress/tee-ingress/internal/dnsname"
)

// maxChainCerts bounds a PEM chain: leaf plus a few intermediates.
const maxChainCerts = 8

// ParseChainPEM parses a full chain in PEM, leaf first: only CERTIFICATE
// blocks, each signed by the next one, the first not a CA. A "PRIVATE KEY"
// anywhere is refused: a key file passed by mistake must not be published.
func ParseChainPEM(b []byte) ([]*x509.Certificate, error) {
	if bytes.Contains(b, []byte("PRIVATE KEY")) {
		return nil, errors.New("contains \"PRIVATE KEY\"; pass only the certificate chain")
	}
	var chain []*x509.Certificate
	rest := b
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("block %d is %q; only CERTIFICATE blocks accepted", len(chain)+1, blk.Type)
		}
		if len(chain) == maxChainCerts {
			return nil, fmt.Errorf("more than %d certificates", maxChainCerts)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(chain)+1, err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block; want the full chain, leaf first")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("data after the last PEM block")
	}
	if chain[0].IsCA {
		return nil, fmt.Errorf("first certificate (%s) is a CA; want the leaf first", chain[0].Subject)
	}
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			return nil, fmt.Errorf("certificate %d (%s) is not signed by certificate %d (%s); want leaf first, then each issuer: %w",
				i+1, chain[i].Subject, i+2, chain[i+1].Subject, err)
		}
	}
	return chain, nil
}

// encodeChainPEM writes chain as canonical PEM: only the certificate blocks,
// nothing a caller had around them.
func encodeChainPEM(chain []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range chain {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// covers reports whether leaf is valid for domain: an exact DNS SAN, or for
// a non-wildcard domain a wildcard SAN matching its first label.
func covers(leaf *x509.Certificate, domain string) bool {
	for _, n := range leaf.DNSNames {
		if dnsname.Covers(strings.ToLower(n), domain) {
			return true
		}
	}
	return false
}
