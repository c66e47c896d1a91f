package evidence

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/testing/testdata"
)

// The values the two real quotes measured into RTMR3 before system-ready.
var fixtureIdentity = map[string]Identity{
	fixtureFull: {
		AppID:       "3763bc34552cf3a27ff71ad5f7a90471562a1a2d",
		ComposeHash: "3763bc34552cf3a27ff71ad5f7a90471562a1a2df552dfc1998cba2d60da27e7",
		InstanceID:  "c3714eb66990eace777b4e664c16e09375dec4c9",
		KeyProvider: `{"name":"local-sgx","id":"1b7a49378403249b6986a907844cab0921eca32dd47e657f3c10311ccaeccf8b"}`,
		SystemReady: true,
	},
	fixtureStripped: {
		AppID:       "86b0e55f2fa8e4fb69d890f14f54d5612707646e",
		ComposeHash: "86b0e55f2fa8e4fb69d890f14f54d5612707646e2573d54e0d2ddaaade77caa9",
		InstanceID:  "050bf89570575fe8fab4cb8f0a62a9e64efe8ead",
		KeyProvider: `{"name":"kms","id":"3059301306072a8648ce3d020106082a8648ce3d030107034200042f71e234d7339a1ceaca09c3c391eb816c533f980adaab34f16ead093ff0ac100d9c03253a3056f6d27735125433180b3e61c54a78f3fd13337869e0051dee06"}`,
		OSImageHash: "07a2388c7a6a1b6a646d443f1517990a4ec294471d63146cda9d56972765051d",
		SystemReady: true,
	},
}

func TestIntelRootIsIntels(t *testing.T) {
	fp := sha256.Sum256(IntelRootCA().Raw)
	const want = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
	if got := hex.EncodeToString(fp[:]); got != want {
		t.Fatalf("embedded Intel SGX root fingerprint %s, want %s", got, want)
	}
	if cn := IntelRootCA().Subject.CommonName; cn != "Intel SGX Root CA" {
		t.Fatalf("embedded root CN %q", cn)
	}
}

func TestRealQuotesVerifyOffline(t *testing.T) {
	for _, f := range []string{fixtureFull, fixtureStripped} {
		t.Run(f, func(t *testing.T) {
			raw := readFixture(t, f)
			id := fixtureIdentity[f]
			var rd []byte
			q, _ := ParseQuoteJSON(raw)
			rd = q.ReportData
			cs := VerifyQuote(raw, VerifyOptions{AppID: id.AppID, ComposeHash: strings.ToUpper(id.ComposeHash), ReportData: rd})
			if Failed(cs, false) {
				t.Fatalf("real quote fails: %v%s", failedNames(cs), dumpChecks(cs))
			}
			for _, name := range []string{CheckQuoteJSON, CheckQuoteFormat, CheckQuoteSignature, CheckQuoteDebug, CheckReportData,
				CheckReportDataField, CheckEventLog, CheckRTMR + "0", CheckRTMR + "1", CheckRTMR + "2", CheckRTMR + "3", CheckAppID, CheckComposeHash} {
				wantStatus(t, cs, name, Pass)
			}
			// Measured and reported; no expected value was given for them.
			wantStatus(t, cs, CheckInstanceID, Info)
			wantStatus(t, cs, CheckKeyProvider, Info)
			if c := checkByName(t, cs, CheckQuoteSignature); c.Got != "valid under Intel's root" {
				t.Errorf("a real quote's signature: Got %q", c.Got)
			}
			for name, want := range map[string]string{CheckAppID: id.AppID, CheckComposeHash: id.ComposeHash, CheckInstanceID: id.InstanceID, CheckKeyProvider: id.KeyProvider, CheckOSImageHash: id.OSImageHash} {
				if got := checkByName(t, cs, name).Got; got != want {
					t.Errorf("%s: got %q, want %q", name, got, want)
				}
			}
			if sig := checkByName(t, cs, CheckQuoteSignature); !strings.Contains(sig.Detail, "Intel SGX Root CA") {
				t.Errorf("signature detail %q does not name the root", sig.Detail)
			}

			events, err := ParseEventLog(q.EventLog)
			if err != nil {
				t.Fatal(err)
			}
			if got := ExtractIdentity(events); got != id {
				t.Errorf("ExtractIdentity = %+v, want %+v", got, id)
			}
		})
	}
}

func TestStrippedLogHasEmptyRuntimeDigests(t *testing.T) {
	q, _ := ParseQuoteJSON(readFixture(t, fixtureStripped))
	events, _ := ParseEventLog(q.EventLog)
	n := 0
	for _, e := range events {
		if e.IMR == 3 {
			n++
			if e.Digest != "" {
				t.Fatalf("stripped fixture event %q has a digest; the test would not show replay from payloads", e.Event)
			}
		}
	}
	if n < 9 {
		t.Fatalf("only %d IMR 3 events", n)
	}
}

// go-tdx-guest's own sample quote (an Intel-signed v4 quote) passes our
// signature check at a time its PCK certificates were valid.
func TestGoTDXGuestSampleQuote(t *testing.T) {
	tq, err := ParseTDQuote(testdata.RawQuote)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2023, time.July, 1, 1, 0, 0, 0, time.UTC)
	if c := signatureCheck(tq, VerifyOptions{Now: at}); c.Status != Pass {
		t.Fatalf("sample quote: %+v", c)
	}
	// As a quote.json without an event log, it still verifies its signature.
	body, _ := json.Marshal(map[string]string{"quote": hex.EncodeToString(testdata.RawQuote), "event_log": "[]"})
	cs := VerifyQuote(body, VerifyOptions{Now: at})
	wantStatus(t, cs, CheckQuoteSignature, Pass)
	wantStatus(t, cs, CheckRTMR+"0", Fail) // no events, RTMRs are not zero
	wantStatus(t, cs, CheckAppID, Warn)    // RTMR3 is zero there: nothing measured
	// Flip one bit of the signed body.
	bad := bytes.Clone(testdata.RawQuote)
	bad[0x3C] ^= 1
	tq, _ = ParseTDQuote(bad)
	if c := signatureCheck(tq, VerifyOptions{Now: at}); c.Status != Fail {
		t.Fatalf("flipped sample quote passes: %+v", c)
	}
}

// mutateFixture changes the fixture's GetQuote JSON.
func mutateFixture(t *testing.T, f string, edit func(m map[string]string)) []byte {
	t.Helper()
	var m map[string]string
	if err := json.Unmarshal(readFixture(t, f), &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	b, _ := json.Marshal(m)
	return b
}

func flipHex(t *testing.T, s string, byteIndex int, mask byte) string {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	b[byteIndex] ^= mask
	return hex.EncodeToString(b)
}

// editEvent changes one event of an event log.
func editEvent(t *testing.T, log string, match func(e map[string]any) bool, edit func(e map[string]any)) string {
	t.Helper()
	var events []map[string]any
	if err := json.Unmarshal([]byte(log), &events); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range events {
		if match(e) {
			edit(e)
			found = true
			break
		}
	}
	if !found {
		t.Fatal("no matching event")
	}
	b, _ := json.Marshal(events)
	return string(b)
}

func TestFlippedBitFailsNamedCheck(t *testing.T) {
	byName := func(name string) func(e map[string]any) bool {
		return func(e map[string]any) bool { return e["event"] == name }
	}
	firstBoot := func(e map[string]any) bool { return e["imr"].(float64) == 0 }
	cases := []struct {
		name    string
		fixture string
		edit    func(t *testing.T, m map[string]string)
		want    []string // checks that must fail
		pass    []string // checks that must still pass
	}{
		{"quote body byte (mrtd)", fixtureFull, func(t *testing.T, m map[string]string) { m["quote"] = flipHex(t, m["quote"], 48+136, 1) },
			[]string{CheckQuoteSignature}, []string{CheckReportData, CheckRTMR + "3"}},
		{"quote report_data", fixtureFull, func(t *testing.T, m map[string]string) { m["quote"] = flipHex(t, m["quote"], reportDataOffset, 0x80) },
			[]string{CheckQuoteSignature, CheckReportData, CheckReportDataField}, nil},
		{"quote rtmr3", fixtureStripped, func(t *testing.T, m map[string]string) { m["quote"] = flipHex(t, m["quote"], 376+3*48, 1) },
			[]string{CheckQuoteSignature, CheckRTMR + "3"}, []string{CheckRTMR + "0"}},
		{"quote signature byte", fixtureStripped, func(t *testing.T, m map[string]string) { m["quote"] = flipHex(t, m["quote"], 640, 1) },
			[]string{CheckQuoteSignature}, []string{CheckReportData}},
		{"quote PCK certificate", fixtureStripped, func(t *testing.T, m map[string]string) {
			q, _ := hex.DecodeString(m["quote"])
			i := bytes.Index(q, []byte("-----BEGIN CERTIFICATE-----\n")) + 100
			m["quote"] = flipHex(t, m["quote"], i, 1)
		}, []string{CheckQuoteSignature}, nil},
		{"report_data field", fixtureStripped, func(t *testing.T, m map[string]string) { m["report_data"] = flipHex(t, m["report_data"], 0, 1) },
			[]string{CheckReportDataField}, []string{CheckQuoteSignature, CheckReportData}},
		{"app-id payload (full log)", fixtureFull, func(t *testing.T, m map[string]string) {
			m["event_log"] = editEvent(t, m["event_log"], byName("app-id"), func(e map[string]any) { e["event_payload"] = flipHex(t, e["event_payload"].(string), 0, 1) })
		}, []string{CheckRTMR + "3"}, []string{CheckQuoteSignature}},
		{"app-id payload (stripped log)", fixtureStripped, func(t *testing.T, m map[string]string) {
			m["event_log"] = editEvent(t, m["event_log"], byName("app-id"), func(e map[string]any) { e["event_payload"] = flipHex(t, e["event_payload"].(string), 19, 0x40) })
		}, []string{CheckRTMR + "3"}, []string{CheckRTMR + "0", CheckQuoteSignature}},
		{"compose-hash name", fixtureStripped, func(t *testing.T, m map[string]string) {
			m["event_log"] = editEvent(t, m["event_log"], byName("compose-hash"), func(e map[string]any) { e["event"] = "compose-hasH" })
		}, []string{CheckRTMR + "3"}, nil},
		{"boot event digest", fixtureStripped, func(t *testing.T, m map[string]string) {
			m["event_log"] = editEvent(t, m["event_log"], firstBoot, func(e map[string]any) { e["digest"] = flipHex(t, e["digest"].(string), 47, 1) })
		}, []string{CheckRTMR + "0"}, []string{CheckRTMR + "3"}},
		{"event log truncated", fixtureFull, func(t *testing.T, m map[string]string) { m["event_log"] = m["event_log"][:len(m["event_log"])-2] },
			[]string{CheckEventLog}, []string{CheckQuoteSignature}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := mutateFixture(t, c.fixture, func(m map[string]string) { c.edit(t, m) })
			orig, _ := ParseQuoteJSON(readFixture(t, c.fixture))
			cs := VerifyQuote(body, VerifyOptions{ReportData: orig.ReportData})
			for _, n := range c.want {
				wantStatus(t, cs, n, Fail)
			}
			for _, n := range c.pass {
				wantStatus(t, cs, n, Pass)
			}
		})
	}
}

func TestDebugTDRejected(t *testing.T) {
	body := mutateFixture(t, fixtureFull, func(m map[string]string) { m["quote"] = flipHex(t, m["quote"], 48+120, 1) })
	cs := VerifyQuote(body, VerifyOptions{})
	wantStatus(t, cs, CheckQuoteDebug, Fail)
	wantStatus(t, cs, CheckQuoteSignature, Fail)
	if h := checkByName(t, cs, CheckQuoteDebug).Hint; !strings.Contains(h, "debug") {
		t.Errorf("hint %q", h)
	}
}

func TestIdentityExpectations(t *testing.T) {
	raw := readFixture(t, fixtureStripped)
	id := fixtureIdentity[fixtureStripped]
	cs := VerifyQuote(raw, VerifyOptions{AppID: "0x" + id.AppID})
	wantStatus(t, cs, CheckAppID, Pass)
	wantStatus(t, cs, CheckComposeHash, Info) // not compared: extracted from a replayed log
	wantStatus(t, cs, CheckReportData, Skip)

	cs = VerifyQuote(raw, VerifyOptions{AppID: strings.Repeat("ab", 20)})
	c := checkByName(t, cs, CheckAppID)
	if c.Status != Fail || c.Want != strings.Repeat("ab", 20) || c.Got != id.AppID {
		t.Errorf("wrong app id: %+v", c)
	}

	cs = VerifyQuote(raw, VerifyOptions{ComposeJSON: []byte(`{"name":"other"}`)})
	wantStatus(t, cs, CheckComposeHash, Fail)
	// Expected hash right, compose file wrong: both must hold.
	cs = VerifyQuote(raw, VerifyOptions{ComposeHash: id.ComposeHash, ComposeJSON: []byte(`{}`)})
	wantStatus(t, cs, CheckComposeHash, Fail)

	cs = VerifyQuote(raw, VerifyOptions{ReportData: make([]byte, 64)})
	wantStatus(t, cs, CheckReportData, Fail)
	cs = VerifyQuote(raw, VerifyOptions{ReportData: make([]byte, 3)})
	wantStatus(t, cs, CheckReportData, Fail)
}

// Identity values of a log that does not replay are not trusted, whatever
// is expected: not compared (skipped), the replay check failing for them.
func TestIdentityUntrustedWithoutReplay(t *testing.T) {
	id := fixtureIdentity[fixtureFull]
	body := mutateFixture(t, fixtureFull, func(m map[string]string) {
		m["event_log"] = editEvent(t, m["event_log"], func(e map[string]any) bool { return e["event"] == "instance-id" },
			func(e map[string]any) { e["event_payload"] = strings.Repeat("00", 20) })
	})
	cs := VerifyQuote(body, VerifyOptions{AppID: id.AppID})
	wantStatus(t, cs, CheckRTMR+"3", Fail)
	wantStatus(t, cs, CheckAppID, Skip)
	wantStatus(t, cs, CheckInstanceID, Skip)
}

func TestExtraRootPEM(t *testing.T) {
	raw := readFixture(t, fixtureFull)
	cs := VerifyQuote(raw, VerifyOptions{TrustedRootsPEM: []byte("not pem")})
	c := checkByName(t, cs, CheckQuoteSignature)
	if c.Status != Fail || !strings.Contains(c.Hint, "--tdx-root") {
		t.Errorf("garbage root: %+v", c)
	}
	// An extra root does not stop Intel's from being trusted.
	p := newTestPKI(t)
	var rootPEM bytes.Buffer
	fmt.Fprintf(&rootPEM, "%s", pemCert(p.root.Raw))
	cs = VerifyQuote(raw, VerifyOptions{TrustedRootsPEM: rootPEM.Bytes()})
	wantStatus(t, cs, CheckQuoteSignature, Pass)
}

func TestQuoteJSONErrors(t *testing.T) {
	cases := []struct{ in, want string }{
		{``, "want a JSON object"},
		{`{"error":"agent down"}`, `"quote" missing`},
		{`{"quote":"zz","event_log":"[]"}`, "not hex"},
		{`{"quote":"","event_log":"[]"}`, "empty"},
		{`{"quote":"00"}`, `"event_log" missing`},
		{`{"quote":"00","event_log":"[]","report_data":"0011"}`, "has 2 bytes, want 64"},
		{`{"quote":"00","event_log":"[]"} {}`, "trailing data"},
		{`[]`, "want a JSON object"},
	}
	for _, c := range cases {
		_, err := ParseQuoteJSON([]byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseQuoteJSON(%q) = %v, want error containing %q", c.in, err, c.want)
		}
		cs := VerifyQuote([]byte(c.in), VerifyOptions{})
		wantStatus(t, cs, CheckQuoteJSON, Fail)
	}
	for _, c := range []struct {
		quote []byte
		want  string
	}{
		{[]byte{4}, "too short"},
		{[]byte{5, 0, 2, 0, 0x81, 0, 0, 0}, "only version 4"},
		{append([]byte{4, 0, 2, 0, 0x81, 0, 0, 0}, make([]byte, 100)...), "parsing TDX quote"},
	} {
		if _, err := ParseTDQuote(c.quote); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseTDQuote(%x) = %v, want %q", c.quote, err, c.want)
		}
	}
}

func TestFailedStrict(t *testing.T) {
	cs := []Check{{Status: Pass}, {Status: Warn}}
	if Failed(cs, false) || !Failed(cs, true) {
		t.Fatal("warn must fail only in strict mode")
	}
	if !Failed([]Check{{Status: Fail}}, false) {
		t.Fatal("fail must fail")
	}
	b, _ := json.Marshal(Check{Name: "n", Status: Pass})
	if string(b) != `{"name":"n","status":"pass"}` {
		t.Fatalf("json %s", b)
	}
}
