package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/internal/agentsim"
	"github.com/tee-ingress/tee-ingress/internal/dnsserver"
)

// TestDomainTampering breaks one thing at a time in a deployment that
// passes, runs the verifycli binary, and asserts exit status 1 and that
// exactly the checks that should fail do.
func TestDomainTampering(t *testing.T) {
	day := 24 * time.Hour
	cases := []struct {
		name  string
		setup func(t *testing.T, w *world) []string // extra arguments
		want  []string                              // the failed checks, exactly
		why   string                                // in the detail of the first failed check, if set
	}{
		{"served certificate swapped for another one of the same CA", func(t *testing.T, w *world) []string {
			c := w.ca.issue(t, nil, time.Now().Add(-time.Hour), time.Now().Add(30*day), testDomain).tlsCert()
			w.serveCert.Store(&c)
			return nil
		}, []string{checkTLSLeafBundle}, ""},

		{"served chain is for another name", func(t *testing.T, w *world) []string {
			c := w.ca.issue(t, nil, time.Now().Add(-time.Hour), time.Now().Add(30*day), "other.example.test").tlsCert()
			w.serveCert.Store(&c)
			return nil
		}, []string{checkTLSChain, checkTLSLeafBundle}, ""},

		{"served chain from an untrusted CA", func(t *testing.T, w *world) []string {
			evil := newTestCA(t, "evil CA", time.Now().Add(-day), time.Now().Add(day))
			c := evil.issue(t, nil, time.Now().Add(-time.Hour), time.Now().Add(30*day), testDomain).tlsCert()
			w.serveCert.Store(&c)
			return nil
		}, []string{checkTLSChain, checkTLSLeafBundle}, ""},

		{"served certificate expired", func(t *testing.T, w *world) []string {
			w.cert = w.ca.issue(t, nil, time.Now().Add(-30*day), time.Now().Add(-day), testDomain)
			w.publish(testAccountURI)
			c := w.cert.tlsCert()
			w.serveCert.Store(&c)
			return nil
		}, []string{checkTLSChain}, ""},

		{"account URI changed and bundle requoted, CAA pins the old account", func(t *testing.T, w *world) []string {
			w.publish("https://acme-v02.api.letsencrypt.org/acme/acct/666")
			return nil
		}, []string{checkCAA}, ""},

		{"acme-account.json edited after quoting", func(t *testing.T, w *world) []string {
			w.setTamper(func(rw http.ResponseWriter, r *http.Request) bool {
				if ok, _ := isFile(r, evidence.AccountFile); ok {
					serveBytes(rw, accountJSON("https://acme-v02.api.letsencrypt.org/acme/acct/666"))
					return true
				}
				return false
			})
			return nil
		}, []string{evidence.CheckFileHash + ":" + evidence.AccountFile, checkCAA}, ""},

		{"CAA pins another account", func(t *testing.T, w *world) []string {
			w.dns.Replace(caaPin(testDomain, "issue", pinValue(testAccountURI)), caaPin(testDomain, "issue", pinValue("https://acme-v02.api.letsencrypt.org/acme/acct/666")))
			return nil
		}, []string{checkCAA}, ""},

		{"CAA missing", func(t *testing.T, w *world) []string {
			w.dns.Remove(caaPin(testDomain, "issue", pinValue(testAccountURI)))
			w.dns.Remove(dnsserver.MustRR(testZone + `. 60 IN CAA 0 iodef "mailto:security@example.test"`))
			return nil
		}, []string{checkCAA}, ""},

		{"CAA also allows another CA", func(t *testing.T, w *world) []string {
			w.dns.Add(caaPin(testDomain, "issue", "evil-ca.test"))
			return nil
		}, []string{checkCAA}, ""},

		{"CAA allows http-01 too", func(t *testing.T, w *world) []string {
			w.dns.Replace(caaPin(testDomain, "issue", pinValue(testAccountURI)),
				caaPin(testDomain, "issue", "letsencrypt.org;validationmethods=dns-01,http-01;accounturi="+testAccountURI))
			return nil
		}, []string{checkCAA}, ""},

		{"CAA pins the account without validation methods", func(t *testing.T, w *world) []string {
			w.dns.Replace(caaPin(testDomain, "issue", pinValue(testAccountURI)), caaPin(testDomain, "issue", "letsencrypt.org;accounturi="+testAccountURI))
			return nil
		}, []string{checkCAA}, ""},

		{"unexpired unknown certificate in CT", func(t *testing.T, w *world) []string {
			evil := newTestCA(t, "evil CA", time.Now().Add(-day), time.Now().Add(day))
			w.ct.Add(evil.issue(t, nil, time.Now().Add(-time.Hour), time.Now().Add(30*day), testDomain).leaf)
			return nil
		}, []string{checkCTCertificates}, "issuer CN=evil CA intermediate"},

		{"unexpired wildcard certificate covering the domain in CT", func(t *testing.T, w *world) []string {
			evil := newTestCA(t, "evil CA", time.Now().Add(-day), time.Now().Add(day))
			w.ct.Add(evil.issue(t, nil, time.Now().Add(-time.Hour), time.Now().Add(30*day), "*.example.test").leaf)
			return nil
		}, []string{checkCTCertificates}, ": *.example.test, serial "},

		{"CT certificate copies a history serial with another key", func(t *testing.T, w *world) []string {
			evil := newTestCA(t, "evil CA", time.Now().Add(-day), time.Now().Add(day))
			w.ct.Add(evil.issueSerial(t, w.cert.leaf.SerialNumber, time.Now().Add(-time.Hour), time.Now().Add(30*day), testDomain).leaf)
			return nil
		}, []string{checkCTCertificates}, "same serial as a history certificate, but another public key"},

		{"quote.json from another bundle", func(t *testing.T, w *world) []string {
			other := quoteFor(t, w.sim, evidence.BundleReportData(sha256.Sum256([]byte("another bundle's sha256sum.txt")), [32]byte{}))
			w.replacePublishedQuote(other)
			return nil
		}, []string{evidence.CheckReportData}, ""},

		{"stale nonce: the server replays an old live quote", func(t *testing.T, w *world) []string {
			old := quoteFor(t, w.sim, evidence.BundleReportData(w.bundle().SumsDigest(), [32]byte{1, 2, 3}))
			w.setTamper(func(rw http.ResponseWriter, r *http.Request) bool {
				if ok, live := isFile(r, evidence.QuoteFile); ok && live {
					serveBytes(rw, old)
					return true
				}
				return false
			})
			return nil
		}, []string{prefixLive + evidence.CheckReportData}, ""},

		{"live quote from another TEE (trusted root, other app)", func(t *testing.T, w *world) []string {
			other := newSimulator(t, otherSeed)
			roots := writeFile(t, w.dir, "both-roots.pem", append(w.sim.RootPEM(), other.RootPEM()...))
			w.setTamper(func(rw http.ResponseWriter, r *http.Request) bool {
				if ok, live := isFile(r, evidence.QuoteFile); ok && live {
					serveBytes(rw, quoteFor(t, other, evidence.BundleReportData(w.bundle().SumsDigest(), requestNonce(t, r))))
					return true
				}
				return false
			})
			return []string{"--tdx-root", roots}
		}, []string{prefixLive + "identity"}, ""},

		{"quote signed under an untrusted root", func(t *testing.T, w *world) []string {
			other := newSimulator(t, otherSeed)
			q := quoteFor(t, other, evidence.BundleReportData(w.bundle().SumsDigest(), [32]byte{}))
			w.replacePublishedQuote(q)
			return nil
		}, []string{evidence.CheckQuoteSignature}, ""},

		{"debug TD", func(t *testing.T, w *world) []string {
			debug, err := agentsim.New(agentsim.Config{Seed: worldSeed, Stripped: true, Debug: true})
			if err != nil {
				t.Fatal(err)
			}
			q := quoteFor(t, debug, evidence.BundleReportData(w.bundle().SumsDigest(), [32]byte{}))
			w.replacePublishedQuote(q)
			return nil
		}, []string{evidence.CheckQuoteDebug}, ""},

		{"event log altered: another app-id", func(t *testing.T, w *world) []string {
			q := alterEventLog(t, w.bundle().Quote().Raw, "app-id", bytes.Repeat([]byte{0xee}, 20))
			w.replacePublishedQuote(q)
			return nil
		}, []string{evidence.CheckRTMR + "3"}, ""},

		{"wrong compose hash expected", func(t *testing.T, w *world) []string {
			return []string{"--compose-hash", strings.Repeat("ab", 32)}
		}, []string{evidence.CheckComposeHash, prefixLive + evidence.CheckComposeHash}, ""},

		{"compose file of another version", func(t *testing.T, w *world) []string {
			c := append(w.sim.ComposeJSON(), ' ')
			return []string{"--compose", writeFile(t, w.dir, "compose.json", c)}
		}, []string{evidence.CheckComposeHash, prefixLive + evidence.CheckComposeHash}, ""},

		{"wrong app id expected", func(t *testing.T, w *world) []string {
			return []string{"--app-id", strings.Repeat("cd", 20)}
		}, []string{evidence.CheckAppID, prefixLive + evidence.CheckAppID}, ""},

		{"cert.pem differs from sha256sum.txt", func(t *testing.T, w *world) []string {
			other := w.ca.issue(t, nil, time.Now().Add(-time.Hour), time.Now().Add(30*day), testDomain)
			w.setTamper(func(rw http.ResponseWriter, r *http.Request) bool {
				if ok, _ := isFile(r, evidence.CertFile); ok {
					serveBytes(rw, other.chainPEM)
					return true
				}
				return false
			})
			return nil
		}, []string{evidence.CheckFileHash + ":" + evidence.CertFile, evidence.CheckHistory}, ""},

		{"history.json edited after quoting", func(t *testing.T, w *world) []string {
			w.setTamper(func(rw http.ResponseWriter, r *http.Request) bool {
				if ok, _ := isFile(r, evidence.HistoryFile); ok {
					serveBytes(rw, evidence.EncodeHistory(append(w.bundle().History(), evidence.NewHistoryEntry(w.ca.issue(t, nil, time.Now().Add(-day), time.Now().Add(day), testDomain).leaf))))
					return true
				}
				return false
			})
			return nil
		}, []string{evidence.CheckFileHash + ":" + evidence.HistoryFile}, ""},

		{"an unlisted file added to the bundle", func(t *testing.T, w *world) []string {
			extra := w.ca.issue(t, nil, time.Now().Add(-time.Hour), time.Now().Add(30*day), "extra.example.test")
			name := evidence.CertFileName("extra.example.test")
			w.setTamper(func(rw http.ResponseWriter, r *http.Request) bool {
				switch {
				case r.URL.Path == evidence.Prefix+"/" && strings.Contains(r.Header.Get("Accept"), "application/json"):
					var idx evidence.Index
					for _, n := range w.bundle().Names() {
						idx.Files = append(idx.Files, evidence.IndexEntry{Name: n})
					}
					idx.Files = append(idx.Files, evidence.IndexEntry{Name: name})
					rw.Header().Set("Content-Type", "application/json")
					json.NewEncoder(rw).Encode(idx)
					return true
				case r.URL.Path == evidence.Prefix+"/"+name:
					serveBytes(rw, extra.chainPEM)
					return true
				}
				return false
			})
			return nil
		}, []string{evidence.CheckFilesListed}, "not listed in sha256sum.txt: " + evidence.CertFileName("extra.example.test")},
	}
	if len(cases) < 15 {
		t.Fatalf("only %d tampering cases", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			extra := tc.setup(t, w)
			r := runCLI(t, w.args(extra...)...)
			want := slices.Sorted(slices.Values(tc.want))
			if r.report == nil {
				t.Fatalf("exit %d, no report:\n%s", r.code, r.dump())
			}
			if r.code != 1 || !slices.Equal(r.failed(), want) {
				t.Fatalf("exit %d, failed %q; want exit 1, failed %q:\n%s", r.code, r.failed(), want, r.dump())
			}
			for _, name := range tc.want {
				if c := r.check(t, name); c.Hint == "" || c.Detail == "" {
					t.Errorf("%s failed without a detail and a hint: %+v", name, c)
				}
			}
			if d := r.check(t, tc.want[0]).Detail; !strings.Contains(d, tc.why) {
				t.Errorf("%s: detail %q does not say %q", tc.want[0], d, tc.why)
			}
			if tc.want[0] == checkCTCertificates && tc.why != "" && !strings.Contains(tc.why, "same serial") && strings.Contains(r.check(t, tc.want[0]).Detail, "same serial") {
				t.Errorf("an unknown serial was reported as a serial collision")
			}
		})
	}
}

// issueSerial is issue with a chosen serial number and a new key.
func (ca *testCA) issueSerial(t testing.TB, serial *big.Int, notBefore, notAfter time.Time, names ...string) issued {
	t.Helper()
	return ca.issueWith(t, nil, serial, notBefore, notAfter, names...)
}

// alterEventLog changes the payload of the named runtime event in a
// GetQuote response (stripped form: no digest to give it away).
func alterEventLog(t testing.TB, quoteJSON []byte, event string, payload []byte) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(quoteJSON, &m); err != nil {
		t.Fatal(err)
	}
	events, err := evidence.ParseEventLog(m["event_log"].(string))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for i := range events {
		if events[i].Event == event {
			events[i].EventPayload, events[i].Digest, found = hexOf(payload), "", true
		}
	}
	if !found {
		t.Fatalf("no %s event", event)
	}
	log, _ := json.Marshal(events)
	m["event_log"] = string(log)
	out, _ := json.Marshal(m)
	return out
}

// replacePublishedQuote makes the server publish q as quote.json (live
// quotes are left alone).
func (w *world) replacePublishedQuote(q []byte) {
	w.setTamper(func(rw http.ResponseWriter, r *http.Request) bool {
		if ok, live := isFile(r, evidence.QuoteFile); ok && !live {
			serveBytes(rw, q)
			return true
		}
		return false
	})
}
