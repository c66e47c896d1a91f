package evidence

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/tee-ingress/tee-ingress/evidence/dstackfmt"
)

// CheckRATLS names the check that a certificate carries RA-TLS evidence
// (package dstackfmt has the format).
const CheckRATLS = "ratls.extension"

// RATLSReportData is dstackfmt.RATLSReportData.
func RATLSReportData(spki []byte) [64]byte { return dstackfmt.RATLSReportData(spki) }

// IsRATLS reports whether a certificate has extensions of dstack's RA-TLS
// arc: it claims to be one, so its evidence is checked (and missing
// evidence is a failure, not a plain certificate).
func IsRATLS(c *x509.Certificate) bool { return dstackfmt.HasRATLS(c) }

// VerifyRATLS checks the RA-TLS evidence of a certificate from the TLS
// handshake alone: the attestation (or quote and event log) it carries
// verifies, and its report_data binds this certificate's public key.
func VerifyRATLS(c *x509.Certificate, opts VerifyOptions) []Check {
	rd := RATLSReportData(c.RawSubjectPublicKeyInfo)
	opts.ReportData = rd[:]
	ext := Check{Name: CheckRATLS, Want: "an RA-TLS extension (1.3.6.1.4.1.62397.1.8, or .1 and .2)"}
	if att, ok, err := dstackfmt.ExtensionBytes(c, dstackfmt.OIDAttestation); ok {
		if err != nil {
			ext.Status, ext.Detail = Fail, err.Error()
			return []Check{ext}
		}
		ext.Status, ext.Detail, ext.Got = Pass, "the certificate carries a dstack attestation", fmt.Sprintf("%d bytes", len(att))
		return append([]Check{ext}, VerifyDstackAttestation(att, opts)...)
	}
	qj, err := legacyRATLSQuote(c)
	if err != nil {
		ext.Status, ext.Detail = Fail, err.Error()
		ext.Hint = "not an RA-TLS certificate of dstack's, or its evidence was removed"
		return []Check{ext}
	}
	ext.Status, ext.Detail = Pass, "the certificate carries a TDX quote and its event log (older RA-TLS)"
	return append([]Check{ext}, VerifyQuote(qj, opts)...)
}

// legacyRATLSQuote builds the GetQuote form from the .1 and .2 extensions.
func legacyRATLSQuote(c *x509.Certificate) ([]byte, error) {
	quote, ok, err := dstackfmt.ExtensionBytes(c, dstackfmt.OIDQuote)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("the certificate has RA-TLS extensions but neither an attestation (%s) nor a quote (%s)", dstackfmt.OIDAttestation, dstackfmt.OIDQuote)
	}
	el, ok, err := dstackfmt.ExtensionBytes(c, dstackfmt.OIDEventLog)
	if err != nil || !ok {
		return nil, fmt.Errorf("the certificate has a quote but no event log extension (%s)", dstackfmt.OIDEventLog)
	}
	if el, err = dstackfmt.EventLogValue(el); err != nil {
		return nil, err
	}
	tq, err := ParseTDQuote(quote)
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]string{"quote": hex.EncodeToString(quote), "event_log": string(el),
		"report_data": hex.EncodeToString(tq.ReportData[:])})
}

// RATLSExtension is the certificate extension that carries att (an
// EncodeDstackAttestation result), as dstack writes it.
func RATLSExtension(att []byte) (pkix.Extension, error) {
	return dstackfmt.Extension(dstackfmt.OIDAttestation, att)
}
