package dstackfmt

import (
	"bytes"
	"compress/gzip"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"io"
)

// dstack's RA-TLS certificates carry their evidence in X.509 extensions
// under the OID arc 1.3.6.1.4.1.62397.1, each value a DER OCTET STRING: .8
// a dstack attestation (current), or .1 the raw TDX quote and .2 its event
// log (older); .3 is the app id.
var (
	OIDArc         = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62397, 1}
	OIDQuote       = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62397, 1, 1}
	OIDEventLog    = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62397, 1, 2}
	OIDAppID       = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62397, 1, 3}
	OIDAttestation = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62397, 1, 8}
)

// RATLSReportData is the report_data of an RA-TLS certificate's quote:
// SHA-512("ratls-cert:" || spki), spki its SubjectPublicKeyInfo DER.
func RATLSReportData(spki []byte) [64]byte {
	return sha512.Sum512(append([]byte("ratls-cert:"), spki...))
}

// Extension wraps value as dstack writes an RA-TLS extension.
func Extension(oid asn1.ObjectIdentifier, value []byte) (pkix.Extension, error) {
	v, err := asn1.Marshal(value)
	if err != nil {
		return pkix.Extension{}, err
	}
	return pkix.Extension{Id: oid, Value: v}, nil
}

// ExtensionBytes unwraps the value of c's extension oid; ok is false when c
// has none.
func ExtensionBytes(c *x509.Certificate, oid asn1.ObjectIdentifier) (b []byte, ok bool, err error) {
	for _, e := range c.Extensions {
		if !e.Id.Equal(oid) {
			continue
		}
		rest, err := asn1.Unmarshal(e.Value, &b)
		if err != nil || len(rest) != 0 {
			return nil, true, fmt.Errorf("extension %s is not one DER OCTET STRING", oid)
		}
		return b, true, nil
	}
	return nil, false, nil
}

// HasRATLS reports whether c has an extension of the RA-TLS arc.
func HasRATLS(c *x509.Certificate) bool {
	for _, e := range c.Extensions {
		if len(e.Id) == len(OIDArc)+1 && e.Id[:len(OIDArc)].Equal(OIDArc) {
			return true
		}
	}
	return false
}

// eventLogGzipMagic prefixes a gzip-compressed event-log extension (dstack's
// EVENTLOG_GZIP_MAGIC); without it the value is the plain JSON log.
const eventLogGzipMagic = "ELGZv1"

// MaxEventLog bounds a decompressed event-log extension, as dstack does
// (a guard against gzip bombs).
const MaxEventLog = 16 << 10

// EventLogValue is the event log JSON of an event-log extension's value,
// decompressed when dstack compressed it.
func EventLogValue(v []byte) ([]byte, error) {
	rest, ok := bytes.CutPrefix(v, []byte(eventLogGzipMagic))
	if !ok {
		return v, nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(rest))
	if err != nil {
		return nil, fmt.Errorf("event log extension: %w", err)
	}
	out, err := io.ReadAll(io.LimitReader(zr, MaxEventLog+1))
	if err != nil {
		return nil, fmt.Errorf("event log extension: %w", err)
	}
	if len(out) > MaxEventLog {
		return nil, fmt.Errorf("event log extension: over %d bytes decompressed", MaxEventLog)
	}
	return out, nil
}
