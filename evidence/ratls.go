package evidence

import (
	"bytes"
	"compress/gzip"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// dstack's RA-TLS certificates (its ra-tls crate) carry their evidence in
// X.509 extensions under the OID arc 1.3.6.1.4.1.62397.1, each value a DER
// OCTET STRING: .8 a dstack attestation (current), or .1 the raw TDX quote
// and .2 its event log (older). The quote's report_data is
// SHA-512("ratls-cert:" || the certificate's SubjectPublicKeyInfo DER).
var (
	OIDRATLSQuote       = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62397, 1, 1}
	OIDRATLSEventLog    = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62397, 1, 2}
	OIDRATLSAppID       = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62397, 1, 3}
	OIDRATLSAttestation = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62397, 1, 8}
)

// CheckRATLS names the check that a certificate carries RA-TLS evidence.
const CheckRATLS = "ratls.extension"

// RATLSReportData is the report_data an RA-TLS certificate's quote must
// carry: SHA-512("ratls-cert:" || spki), spki the SubjectPublicKeyInfo DER.
func RATLSReportData(spki []byte) [64]byte {
	return sha512.Sum512(append([]byte("ratls-cert:"), spki...))
}

// oidRATLSArc is dstack's RA-TLS OID arc.
var oidRATLSArc = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62397, 1}

// IsRATLS reports whether a certificate has extensions of dstack's RA-TLS
// arc: it claims to be one, so its evidence is checked (and missing
// evidence is a failure, not a plain certificate).
func IsRATLS(c *x509.Certificate) bool {
	for _, e := range c.Extensions {
		if len(e.Id) == len(oidRATLSArc)+1 && e.Id[:len(oidRATLSArc)].Equal(oidRATLSArc) {
			return true
		}
	}
	return false
}

func extension(c *x509.Certificate, oid asn1.ObjectIdentifier) []byte {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return e.Value
		}
	}
	return nil
}

// extensionBytes unwraps an extension value's OCTET STRING.
func extensionBytes(c *x509.Certificate, oid asn1.ObjectIdentifier) ([]byte, bool, error) {
	v := extension(c, oid)
	if v == nil {
		return nil, false, nil
	}
	var b []byte
	rest, err := asn1.Unmarshal(v, &b)
	if err != nil || len(rest) != 0 {
		return nil, true, fmt.Errorf("extension %s is not one DER OCTET STRING", oid)
	}
	return b, true, nil
}

// VerifyRATLS checks the RA-TLS evidence of a certificate from the TLS
// handshake alone: the attestation (or quote and event log) it carries
// verifies, and its report_data binds this certificate's public key.
func VerifyRATLS(c *x509.Certificate, opts VerifyOptions) []Check {
	rd := RATLSReportData(c.RawSubjectPublicKeyInfo)
	opts.ReportData = rd[:]
	ext := Check{Name: CheckRATLS, Want: "an RA-TLS extension (1.3.6.1.4.1.62397.1.8, or .1 and .2)"}
	if att, ok, err := extensionBytes(c, OIDRATLSAttestation); ok {
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

// maxEventLogExt bounds a decompressed event-log extension, as dstack does.
const maxEventLogExt = 1 << 20

// legacyRATLSQuote builds the GetQuote form from the .1 and .2 extensions.
func legacyRATLSQuote(c *x509.Certificate) ([]byte, error) {
	quote, ok, err := extensionBytes(c, OIDRATLSQuote)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("the certificate has RA-TLS extensions but neither an attestation (%s) nor a quote (%s)", OIDRATLSAttestation, OIDRATLSQuote)
	}
	el, ok, err := extensionBytes(c, OIDRATLSEventLog)
	if err != nil || !ok {
		return nil, fmt.Errorf("the certificate has a quote but no event log extension (%s)", OIDRATLSEventLog)
	}
	if len(el) > 2 && el[0] == 0x1f && el[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(el))
		if err != nil {
			return nil, fmt.Errorf("event log extension: %w", err)
		}
		if el, err = io.ReadAll(io.LimitReader(zr, maxEventLogExt+1)); err != nil || len(el) > maxEventLogExt {
			return nil, fmt.Errorf("event log extension: not gzip, or over %d bytes", maxEventLogExt)
		}
	}
	tq, err := ParseTDQuote(quote)
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]string{"quote": hex.EncodeToString(quote), "event_log": string(el),
		"report_data": hex.EncodeToString(tq.ReportData[:])})
}

// EncodeDstackAttestation writes q in dstack's attestation encoding (SCALE
// V0, dstack-tdx), as VerifyDstackAttestation and dstack's verifier read it.
func EncodeDstackAttestation(q *Quote) ([]byte, error) {
	var events []attestationEvent
	if err := json.Unmarshal([]byte(q.EventLog), &events); err != nil {
		return nil, fmt.Errorf("encoding attestation: event log: %w", err)
	}
	w := &scaleWriter{}
	w.b = append(w.b, 0, 0) // V0, DstackTdx
	w.bytes(q.Quote)
	w.compact(len(events))
	for _, e := range events {
		digest, err1 := hex.DecodeString(e.Digest)
		payload, err2 := hex.DecodeString(e.Payload)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("encoding attestation: event %q: %w", e.Event, err)
		}
		w.b = binary.LittleEndian.AppendUint32(w.b, e.IMR)
		w.b = binary.LittleEndian.AppendUint32(w.b, e.EventType)
		w.bytes(digest)
		w.bytes([]byte(e.Event))
		w.bytes(payload)
	}
	w.compact(0) // runtime events: the TDX log carries them
	var rd [64]byte
	copy(rd[:], q.ReportData)
	w.b = append(w.b, rd[:]...)
	w.bytes([]byte(q.VMConfig))
	return w.b, nil
}

type scaleWriter struct{ b []byte }

func (w *scaleWriter) compact(n int) {
	switch {
	case n < 1<<6:
		w.b = append(w.b, byte(n<<2))
	case n < 1<<14:
		w.b = binary.LittleEndian.AppendUint16(w.b, uint16(n<<2|1))
	default:
		w.b = binary.LittleEndian.AppendUint32(w.b, uint32(n<<2|2))
	}
}

func (w *scaleWriter) bytes(p []byte) {
	w.compact(len(p))
	w.b = append(w.b, p...)
}

// RATLSExtension is the certificate extension that carries att (an
// EncodeDstackAttestation result), as dstack writes it.
func RATLSExtension(att []byte) (pkix.Extension, error) {
	v, err := asn1.Marshal(att)
	if err != nil {
		return pkix.Extension{}, err
	}
	return pkix.Extension{Id: OIDRATLSAttestation, Value: v}, nil
}
