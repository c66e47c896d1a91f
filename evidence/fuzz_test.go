package evidence

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// Seeds beyond these live in testdata/fuzz/<FuzzName>/.

func FuzzParseSHA256Sum(f *testing.F) {
	h := strings.Repeat("0f", 32)
	f.Add([]byte(h + "  acme-account.json\n" + h + "  cert.pem\n" + h + "  cert-*.example.com.pem\n" + h + "  history.json\n"))
	f.Add([]byte(h + " *cert.pem\n"))
	f.Add([]byte(h + "  ../etc/passwd\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		lines, err := ParseSHA256Sum(in)
		if err != nil {
			return
		}
		if out := EncodeSHA256Sum(lines); !bytes.Equal(out, in) {
			t.Fatalf("accepted input re-encodes differently:\n%q\n%q", in, out)
		}
		seen := map[string]bool{}
		for _, l := range lines {
			if !IsBundleFileName(l.Name) || strings.ContainsAny(l.Name, "/\\\x00\n") || seen[l.Name] {
				t.Fatalf("accepted name %q", l.Name)
			}
			seen[l.Name] = true
		}
	})
}

func FuzzParseQuoteJSON(f *testing.F) {
	for _, name := range []string{fixtureFull, fixtureStripped} {
		f.Add(readFixture(f, name))
	}
	f.Add([]byte(`{"error":"quote failed"}`))
	f.Add([]byte(`{"quote":"0400020081000000","event_log":"[]","report_data":"00"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		q, err := ParseQuoteJSON(in)
		// Whatever the input, verification reports and never panics.
		cs := VerifyQuote(in, VerifyOptions{})
		if err != nil {
			if checkByName(t, cs, CheckQuoteJSON).Status != Fail {
				t.Fatal("unparsable quote.json did not fail its check")
			}
			return
		}
		if !bytes.Equal(q.Raw, in) || len(q.Quote) == 0 || (q.ReportData != nil && len(q.ReportData) != 64) {
			t.Fatalf("accepted %+v", q)
		}
		// The decoded fields encode back to an equivalent response.
		m := map[string]string{"quote": hex.EncodeToString(q.Quote), "event_log": q.EventLog, "vm_config": q.VMConfig}
		if q.ReportData != nil {
			m["report_data"] = hex.EncodeToString(q.ReportData)
		}
		re, _ := json.Marshal(m)
		q2, err := ParseQuoteJSON(re)
		if err != nil || !bytes.Equal(q2.Quote, q.Quote) || q2.EventLog != q.EventLog || !bytes.Equal(q2.ReportData, q.ReportData) {
			t.Fatalf("re-encoded quote.json does not parse the same: %v", err)
		}
		if tq, err := ParseTDQuote(q.Quote); err == nil {
			_ = tq.Debug()
		}
	})
}

func FuzzParseEventLog(f *testing.F) {
	for _, name := range []string{fixtureFull, fixtureStripped} {
		q, err := ParseQuoteJSON(readFixture(f, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(q.EventLog)
	}
	f.Add(`[{"imr":3,"event_type":134217729,"digest":"","event":"app-id","event_payload":"00"}]`)
	f.Fuzz(func(t *testing.T, in string) {
		events, err := ParseEventLog(in)
		if err != nil {
			return
		}
		for _, e := range events {
			if e.IMR > 3 {
				t.Fatalf("accepted imr %d", e.IMR)
			}
		}
		rtmrs, rerr := ReplayRTMRs(events)
		_ = ExtractIdentity(events)
		// Re-encoding gives the same events and the same replay.
		re, _ := json.Marshal(events)
		again, err := ParseEventLog(string(re))
		if err != nil || !reflect.DeepEqual(again, events) {
			t.Fatalf("re-encoded log differs: %v", err)
		}
		rtmrs2, rerr2 := ReplayRTMRs(again)
		if rtmrs != rtmrs2 || (rerr == nil) != (rerr2 == nil) {
			t.Fatal("replay differs after re-encoding")
		}
	})
}

func FuzzParseAccount(f *testing.F) {
	f.Add([]byte(testAccount))
	f.Add([]byte(`{"body":{"key":{"kty":"EC","d":"x"}},"uri":"https://ca/1"}`))
	f.Add([]byte(`{"email":"a@b","registration":{"body":{"status":"valid"},"uri":"https://ca/1"}}`))
	f.Add([]byte(`{"registration":{"body":{},"uri":"https://ca/1","key":{"kty":"EC","d":"x"}}}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		a, err := ParseAccount(in)
		if err != nil {
			return
		}
		if bytes.Contains(in, []byte("PRIVATE KEY")) || !strings.HasPrefix(a.URI, "https://") {
			t.Fatalf("accepted %q", in)
		}
		// What was taken re-encodes to an account that parses the same.
		again, err := ParseAccount(fmt.Appendf(nil, `{"body":%s,"uri":%q}`, a.Body, a.URI))
		if err != nil || again.URI != a.URI || !bytes.Equal(again.Body, a.Body) {
			t.Fatalf("%q: re-encoded account differs: %v", in, err)
		}
	})
}

func FuzzParseHistory(f *testing.F) {
	h := strings.Repeat("ab", 32)
	f.Add([]byte(`{"certificates":[{"domains":["a.com"],"serial":"01","sha256":"` + h + `","spki_sha256":"` + h + `","not_before":"2025-01-01T00:00:00Z","not_after":"2025-04-01T00:00:00Z"}]}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		entries, err := ParseHistory(in)
		if err != nil {
			return
		}
		again, err := ParseHistory(EncodeHistory(entries))
		if err != nil || len(again) != len(entries) {
			t.Fatalf("re-encoded history: %v", err)
		}
	})
}

// Whatever the path, the handler serves a bundle file, the index, or refuses.
func FuzzHandlerPath(f *testing.F) {
	for _, p := range []string{"/evidences/cert.pem", "/evidences/../x", "/evidences/%2e%2e%2fx", "/evidences/cert-%2A.example.com.pem", "/evidences/quote.json?nonce=zz"} {
		f.Add(p)
	}
	q := newUnsignedQuoter(f)
	p := newPublisher(f, q, "")
	if _, err := p.Publish(context.Background(), testInput(f, newTestPKI(f))); err != nil {
		f.Fatal(err)
	}
	h, _ := NewHandler(HandlerConfig{Source: p})
	b := p.Current()
	f.Fuzz(func(t *testing.T, target string) {
		req, err := http.NewRequest("GET", "http://x", nil)
		if err != nil {
			t.Fatal(err)
		}
		u, err := req.URL.Parse(target)
		if err != nil {
			return
		}
		req.URL = u
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case 200:
			name, _ := strings.CutPrefix(u.Path, Prefix+"/")
			if u.Path == Prefix+"/" {
				return
			}
			want, ok := b.File(name)
			if !ok || !bytes.Equal(rec.Body.Bytes(), want) {
				t.Fatalf("%q served something that is not a bundle file", target)
			}
		case 301, 400, 404, 501:
		default:
			t.Fatalf("%q: status %d", target, rec.Code)
		}
	})
}
