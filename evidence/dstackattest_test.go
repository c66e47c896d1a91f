package evidence

import (
	"bytes"
	"compress/gzip"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/evidence/dstackfmt"
	"github.com/tee-ingress/tee-ingress/internal/agentsim"
)

// attestationFixture is the hex attestation of the real dstack fixture.
func attestationFixture(t testing.TB) string {
	t.Helper()
	var m map[string]string
	if err := json.Unmarshal(readFixture(t, "testdata/dstack-attestation-lite.json"), &m); err != nil {
		t.Fatal(err)
	}
	return m["attestation"]
}

// TestDstackAttestationFixture: dstack's own attestation, captured on TDX
// hardware, verifies: its quote to Intel's root, RTMR3 replaying to the app
// identity, report_data as carried; the stripped boot RTMRs are skipped,
// not passed. One flipped bit in the quote fails the signature.
func TestDstackAttestationFixture(t *testing.T) {
	att := attestationFixture(t)
	cs := VerifyDstackAttestation([]byte(att), VerifyOptions{AppID: fixtureIdentity[fixtureStripped].AppID})
	if Failed(cs, false) {
		t.Fatalf("the real attestation fails: %v%s", failedNames(cs), dumpChecks(cs))
	}
	for _, n := range []string{CheckAttestationFormat, CheckQuoteSignature, CheckQuoteDebug, CheckRTMR + "3", CheckAppID, CheckReportDataField} {
		wantStatus(t, cs, n, Pass)
	}
	for _, n := range []string{CheckRTMR + "0", CheckRTMR + "1", CheckRTMR + "2"} {
		if c := checkByName(t, cs, n); c.Status != Skip || !strings.Contains(c.Detail, "dstack strips boot events") {
			t.Errorf("%s: %+v", n, c)
		}
	}
	if c := checkByName(t, cs, CheckQuoteSignature); c.Got != "valid under Intel's root" {
		t.Errorf("signature: %+v", c)
	}
	// report_data binds what the attestation says it does.
	qj, _ := QuoteJSONFromAttestation([]byte(att))
	q, _ := ParseQuoteJSON(qj)
	cs = VerifyDstackAttestation([]byte(att), VerifyOptions{ReportData: q.ReportData})
	wantStatus(t, cs, CheckReportData, Pass)

	raw, _ := hex.DecodeString(att)
	raw[2+2+700] ^= 1 // in the quote's signed body
	cs = VerifyDstackAttestation(raw, VerifyOptions{})
	wantStatus(t, cs, CheckQuoteSignature, Fail)
}

// TestDstackAttestationRefused: other platforms and encodings are named and
// not passed; malformed bytes fail the format check.
func TestDstackAttestationRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		st   Status
		want string
	}{
		{"sev-snp", []byte{0, 3, 0}, Skip, "dstack-amd-sev-snp"},
		{"nitro", []byte{0, 2}, Skip, "dstack-nitro-enclave"},
		{"msgpack v1", []byte{0x85, 1, 2}, Skip, "msgpack (V1)"},
		{"unknown variant", []byte{0, 9}, Fail, "unknown platform variant 9"},
		{"truncated", []byte{0, 0, 0x39, 0x4e, 4, 0}, Fail, "truncated or malformed"},
		{"unknown first byte", []byte{7}, Fail, "neither 0x00"},
		{"empty", nil, Fail, "0 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := VerifyDstackAttestation(tc.in, VerifyOptions{})
			if len(cs) != 1 || cs[0].Status != tc.st || !strings.Contains(cs[0].Detail, tc.want) {
				t.Fatalf("%+v, want %s naming %q", cs, tc.st, tc.want)
			}
		})
	}
	if _, err := QuoteJSONFromAttestation([]byte{0, 1}); !errors.Is(err, ErrUnsupportedAttestation) {
		t.Fatalf("gcp: %v", err)
	}
}

// FuzzQuoteJSONFromAttestation: no input panics, and what is accepted
// re-reads as a GetQuote response.
func FuzzQuoteJSONFromAttestation(f *testing.F) {
	raw, _ := hex.DecodeString(attestationFixture(f))
	f.Add(raw)
	f.Add([]byte{0, 0, 0, 0, 0})
	f.Add([]byte{0, 3, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		qj, err := QuoteJSONFromAttestation(in)
		if err != nil {
			return
		}
		if _, err := ParseQuoteJSON(qj); err != nil && !strings.Contains(err.Error(), "quote") && !strings.Contains(err.Error(), "report_data") {
			t.Fatalf("accepted %x, but its quote JSON does not parse: %v", in, err)
		}
	})
}

// legacyRATLSCert is a certificate in dstack's older RA-TLS form: the raw
// quote in .1 and the event log in .2 (as given), bound to its own key.
func legacyRATLSCert(t *testing.T, s *agentsim.Simulator, eventLog func(string) []byte) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	spki, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	q, err := ParseQuoteJSON(mustQuote(t, s, RATLSReportData(spki)))
	if err != nil {
		t.Fatal(err)
	}
	qe, _ := dstackfmt.Extension(dstackfmt.OIDQuote, q.Quote)
	ee, _ := dstackfmt.Extension(dstackfmt.OIDEventLog, eventLog(q.EventLog))
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtraExtensions: []pkix.Extension{qe, ee}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func mustQuote(t *testing.T, s *agentsim.Simulator, rd [64]byte) []byte {
	t.Helper()
	b, err := s.QuoteFor(rd)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// gzipped is v as dstack compresses an event-log extension.
func gzipped(v []byte) []byte {
	var b bytes.Buffer
	b.WriteString("ELGZv1")
	zw := gzip.NewWriter(&b)
	zw.Write(v)
	zw.Close()
	return b.Bytes()
}

// TestLegacyRATLS: the older RA-TLS form (quote and event log in their own
// extensions) verifies with the log plain or compressed as dstack writes it
// (ELGZv1 + gzip); a compressed log over dstack's limit is refused.
func TestLegacyRATLS(t *testing.T) {
	s := newSim(t, true)
	opts := VerifyOptions{TrustedRootsPEM: s.RootPEM()}
	for name, enc := range map[string]func(string) []byte{
		"plain":      func(l string) []byte { return []byte(l) },
		"compressed": func(l string) []byte { return gzipped([]byte(l)) },
	} {
		cs := VerifyRATLS(legacyRATLSCert(t, s, enc), opts)
		if Failed(cs, false) {
			t.Fatalf("%s: %v%s", name, failedNames(cs), dumpChecks(cs))
		}
		wantStatus(t, cs, CheckReportData, Pass)
		wantStatus(t, cs, CheckRTMR+"3", Pass)
	}
	bomb := legacyRATLSCert(t, s, func(string) []byte { return gzipped(bytes.Repeat([]byte(" "), dstackfmt.MaxEventLog+1)) })
	if c := checkByName(t, VerifyRATLS(bomb, opts), CheckRATLS); c.Status != Fail || !strings.Contains(c.Detail, "over") {
		t.Fatalf("a compressed log over the limit: %+v", c)
	}
}
