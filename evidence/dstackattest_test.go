package evidence

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
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
