package main

import (
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/internal/agentsim"
	"github.com/tee-ingress/tee-ingress/internal/ctlog"
	"github.com/tee-ingress/tee-ingress/internal/dnsserver"
)

const (
	gwBase       = "gw.test"
	gwHost       = "gateway.gw.test"
	gwAccountURI = "https://acme-v02.api.letsencrypt.org/acme/acct/424242"
)

// gatewayWorld is a dstack gateway on loopback: a wildcard certificate
// whose key, and an older key, are quoted by the simulator in
// /.dstack/acme-info, plus app-info, CAA and CT.
type gatewayWorld struct {
	sim       *agentsim.Simulator
	ca        *testCA
	cert, old issued
	mu        sync.Mutex     // guards info and appInfo: tests edit them, the server reads them
	info      map[string]any // acme-info as served
	appInfo   map[string]any
	srv       *httptest.Server
	dns       *dnsserver.Server
	ct        *ctlog.Server
	caFile    string
	rootFile  string
	serveCert atomic.Pointer[tls.Certificate]
}

func newGatewayWorld(t *testing.T, older bool) *gatewayWorld {
	t.Helper()
	now := time.Now().Truncate(time.Second)
	day := 24 * time.Hour
	w := &gatewayWorld{sim: newSimulator(t, worldSeed)}
	w.ca = newTestCA(t, "gateway CA", now.Add(-365*day), now.Add(365*day))
	w.cert = w.ca.issue(t, nil, now.Add(-time.Hour), now.Add(60*day), "*."+gwBase, gwBase)
	w.old = w.ca.issue(t, nil, now.Add(-50*day), now.Add(40*day), "*."+gwBase)
	keys := []any{w.quotedKey(t, w.cert), w.quotedKey(t, w.old)}
	w.info = map[string]any{
		"account_uri":         gwAccountURI,
		"account_quote":       string(quoteFor(t, w.sim, rd64(gatewayReportData(acmeAccountPrefix, []byte(gwAccountURI))))),
		"account_attestation": "",
		"quoted_hist_keys":    keys,
	}
	if older {
		w.info["hist_keys"] = []string{hexOf(w.cert.leaf.RawSubjectPublicKeyInfo), hexOf(w.old.leaf.RawSubjectPublicKeyInfo)}
		w.info["active_cert"] = string(w.cert.chainPEM)
		w.info["base_domain"] = gwBase
	}
	w.appInfo = map[string]any{"app_id": hexOf(w.sim.AppID()), "instance_id": hexOf(w.sim.InstanceID()), "compose_hash": hexOf(w.sim.ComposeHash()),
		"app_name": "dstack-gateway", "os_image_hash": "", "tcb_info": "{}"}
	c := w.cert.tlsCert()
	w.serveCert.Store(&c)
	w.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		var v any
		switch r.URL.Path {
		case acmeInfoPath:
			v = w.info
		case appInfoPath:
			v = w.appInfo
		default:
			http.NotFound(rw, r)
			return
		}
		w.mu.Lock()
		b, err := json.Marshal(v)
		w.mu.Unlock()
		if err != nil {
			t.Error(err)
		}
		rw.Header().Set("Content-Type", "application/json")
		rw.Write(b)
	}))
	w.srv.TLS = &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return w.serveCert.Load(), nil }}
	w.srv.StartTLS()
	t.Cleanup(w.srv.Close)

	var err error
	if w.dns, err = dnsserver.Start(gwBase); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.dns.Close() })
	w.dns.Add(caaPin(gwBase, "issuewild", pinValue(gwAccountURI)), caaPin(gwBase, "issue", pinValue(gwAccountURI)))
	w.ct = newCTServer(t)
	w.ct.Add(w.old.leaf)
	w.ct.Add(w.cert.leaf)
	w.ct.Add(w.cert.leaf)
	dir := t.TempDir()
	w.caFile = writeFile(t, dir, "ca.pem", w.ca.rootPEM())
	w.rootFile = writeFile(t, dir, "sim-root.pem", w.sim.RootPEM())
	return w
}

func (w *gatewayWorld) quotedKey(t testing.TB, c issued) map[string]any {
	spki := c.leaf.RawSubjectPublicKeyInfo
	return map[string]any{"public_key": hexOf(spki), "quote": string(quoteFor(t, w.sim, rd64(gatewayReportData(ztCertPrefix, spki)))), "attestation": ""}
}

func (w *gatewayWorld) args(extra ...string) []string {
	return append([]string{"gateway", "https://" + gwHost, "--json", "--connect", w.srv.Listener.Addr().String(), "--ca-file", w.caFile,
		"--tdx-root", w.rootFile, "--resolver", w.dns.Addr(), "--ct-url", w.ct.URL()}, extra...)
}

func rd64(b []byte) [64]byte {
	var rd [64]byte
	copy(rd[:], b)
	return rd
}

// TestGatewayBothFormats: the newer acme-info and the older one (with
// hist_keys, active_cert, base_domain) both pass.
func TestGatewayBothFormats(t *testing.T) {
	for _, older := range []bool{false, true} {
		t.Run(map[bool]string{false: "newer", true: "older"}[older], func(t *testing.T) {
			w := newGatewayWorld(t, older)
			r := runCLI(t, w.args("--app-id", hexOf(w.sim.AppID()), "--compose-hash", hexOf(w.sim.ComposeHash()))...)
			if r.code != 0 || r.report.Summary.Fail != 0 {
				t.Fatalf("exit %d, want 0:\n%s", r.code, r.dump())
			}
			want := []string{checkTLSConnect, checkTLSChain, checkAcmeInfo, prefixAccount + evidence.CheckQuoteSignature,
				prefixAccount + evidence.CheckReportData, prefixAccount + evidence.CheckAppID, prefixAccount + evidence.CheckComposeHash,
				checkKeyQuote + ":1", checkKeyQuote + ":2", checkServedKey, checkCAA, checkCTQuery, checkCTCertificates, checkAppInfo}
			if older {
				want = append(want, checkHistKeys, checkActiveCert)
			}
			for _, name := range want {
				if c := r.check(t, name); c.Status != "pass" {
					t.Errorf("%s: %s (%s), want pass", name, c.Status, c.Detail)
				}
			}
			if d := r.check(t, checkAcmeInfo).Detail; older != strings.Contains(d, "older format") {
				t.Errorf("acme-info detail %q does not name the format", d)
			}
			if !strings.Contains(r.check(t, checkServedKey).Detail, "quoted key 1") {
				t.Errorf("served key: %+v", r.check(t, checkServedKey))
			}
			if got := r.check(t, checkCTCertificates).Got; !strings.HasPrefix(got, "3 unexpired, 3 with a quoted key") {
				t.Errorf("ct.certificates got %q", got)
			}
			if r.report.AccountURI != gwAccountURI || r.report.Identity == nil || r.report.Identity.AppID != hexOf(w.sim.AppID()) {
				t.Errorf("report account %q identity %+v", r.report.AccountURI, r.report.Identity)
			}
		})
	}
}

func TestGatewayTampering(t *testing.T) {
	day := 24 * time.Hour
	cases := []struct {
		name  string
		older bool
		setup func(t *testing.T, w *gatewayWorld) []string
		want  []string
	}{
		{"a served key not in the quoted set", false, func(t *testing.T, w *gatewayWorld) []string {
			c := w.ca.issue(t, nil, time.Now().Add(-time.Hour), time.Now().Add(30*day), "*."+gwBase, gwBase).tlsCert()
			w.serveCert.Store(&c)
			return nil
		}, []string{checkServedKey}},

		{"a served key not in the quoted set (older format: also not active_cert)", true, func(t *testing.T, w *gatewayWorld) []string {
			c := w.ca.issue(t, nil, time.Now().Add(-time.Hour), time.Now().Add(30*day), "*."+gwBase, gwBase).tlsCert()
			w.serveCert.Store(&c)
			return nil
		}, []string{checkServedKey}},

		{"the served key's quote binds another key", false, func(t *testing.T, w *gatewayWorld) []string {
			k := w.info["quoted_hist_keys"].([]any)[0].(map[string]any)
			k["quote"] = w.quotedKey(t, w.old)["quote"]
			return nil
		}, []string{checkKeyQuote + ":1", checkServedKey, checkCTCertificates}}, // its certificate in CT is now unaccounted for

		{"the account quote binds another account", false, func(t *testing.T, w *gatewayWorld) []string {
			w.info["account_quote"] = string(quoteFor(t, w.sim, rd64(gatewayReportData(acmeAccountPrefix, []byte("https://acme-v02.api.letsencrypt.org/acme/acct/1")))))
			return nil
		}, []string{prefixAccount + evidence.CheckReportData}},

		{"the account quote is missing", false, func(t *testing.T, w *gatewayWorld) []string {
			w.info["account_quote"] = ""
			return nil
		}, []string{prefixAccount + evidence.CheckQuoteJSON}},

		{"an unknown unexpired certificate for the base domain in CT", false, func(t *testing.T, w *gatewayWorld) []string {
			w.ct.Add(w.ca.issue(t, nil, time.Now().Add(-time.Hour), time.Now().Add(30*day), "*."+gwBase).leaf)
			return nil
		}, []string{checkCTCertificates}},

		{"CAA pins another account", false, func(t *testing.T, w *gatewayWorld) []string {
			w.dns.Replace(caaPin(gwBase, "issuewild", pinValue(gwAccountURI)), caaPin(gwBase, "issuewild", pinValue("https://acme-v02.api.letsencrypt.org/acme/acct/1")))
			return nil
		}, []string{checkCAA}},

		{"a key quote from an untrusted TEE", false, func(t *testing.T, w *gatewayWorld) []string {
			other := newSimulator(t, otherSeed)
			k := w.info["quoted_hist_keys"].([]any)[1].(map[string]any)
			k["quote"] = string(quoteFor(t, other, rd64(gatewayReportData(ztCertPrefix, w.old.leaf.RawSubjectPublicKeyInfo))))
			return nil
		}, []string{checkKeyQuote + ":2", checkCTCertificates}},

		{"wrong app id expected", false, func(t *testing.T, w *gatewayWorld) []string {
			return []string{"--app-id", strings.Repeat("cd", 20)}
		}, []string{prefixAccount + evidence.CheckAppID, checkKeyQuote + ":1", checkKeyQuote + ":2", checkServedKey, checkCTCertificates}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newGatewayWorld(t, tc.older)
			w.mu.Lock()
			extra := tc.setup(t, w)
			w.mu.Unlock()
			r := runCLI(t, w.args(extra...)...)
			want := slices.Sorted(slices.Values(tc.want))
			if r.code != 1 || !slices.Equal(r.failed(), want) {
				t.Fatalf("exit %d, failed %q; want exit 1, failed %q:\n%s", r.code, r.failed(), want, r.dump())
			}
		})
	}
}

// TestGatewayWarnings: what does not prove anything wrong only warns.
func TestGatewayWarnings(t *testing.T) {
	w := newGatewayWorld(t, true)
	w.mu.Lock()
	w.appInfo["compose_hash"] = strings.Repeat("11", 32) // unsigned app-info disagrees
	w.info["hist_keys"] = append(w.info["hist_keys"].([]string), hexOf(w.ca.issue(t, nil, time.Now(), time.Now().Add(time.Hour), "x."+gwBase).leaf.RawSubjectPublicKeyInfo))
	w.mu.Unlock()
	r := runCLI(t, w.args()...)
	if r.code != 0 {
		t.Fatalf("exit %d, want 0:\n%s", r.code, r.dump())
	}
	for _, name := range []string{checkAppInfo, checkHistKeys} {
		if c := r.check(t, name); c.Status != "warn" || c.Hint == "" {
			t.Errorf("%s: %+v, want a warning with a hint", name, c)
		}
	}
}

// dstackAttestationFor is what newer gateways publish instead of a quote:
// the simulator's quote for rd in dstack's attestation encoding, hex.
func dstackAttestationFor(t testing.TB, sim *agentsim.Simulator, rd [64]byte) string {
	t.Helper()
	q, err := evidence.ParseQuoteJSON(quoteFor(t, sim, rd))
	if err != nil {
		t.Fatal(err)
	}
	att, err := evidence.EncodeDstackAttestation(q)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(att)
}

// TestGatewayAttestationsOnly: a newer gateway whose acme-info carries only
// dstack attestations (account_attestation, quoted_hist_keys[].attestation)
// verifies; an attestation that binds another key fails that key and the
// served-key check.
func TestGatewayAttestationsOnly(t *testing.T) {
	w := newGatewayWorld(t, false)
	w.mu.Lock() // the server reads info under mu
	w.info["account_quote"] = ""
	w.info["account_attestation"] = dstackAttestationFor(t, w.sim, rd64(gatewayReportData(acmeAccountPrefix, []byte(gwAccountURI))))
	for i, c := range []issued{w.cert, w.old} {
		k := w.info["quoted_hist_keys"].([]any)[i].(map[string]any)
		k["quote"] = ""
		k["attestation"] = dstackAttestationFor(t, w.sim, rd64(gatewayReportData(ztCertPrefix, c.leaf.RawSubjectPublicKeyInfo)))
	}
	w.mu.Unlock()
	r := runCLI(t, w.args("--app-id", hexOf(w.sim.AppID()))...)
	if r.code != 0 || r.report.Summary.Fail != 0 {
		t.Fatalf("exit %d, want 0:\n%s", r.code, r.dump())
	}
	for _, name := range []string{prefixAccount + evidence.CheckAttestationFormat, prefixAccount + evidence.CheckQuoteSignature,
		prefixAccount + evidence.CheckReportData, prefixAccount + evidence.CheckAppID, checkKeyQuote + ":1", checkServedKey} {
		if c := r.check(t, name); c.Status != "pass" {
			t.Errorf("%s: %s (%s), want pass", name, c.Status, c.Detail)
		}
	}
	// The served key's attestation made for the other key.
	w.mu.Lock()
	w.info["quoted_hist_keys"].([]any)[0].(map[string]any)["attestation"] = dstackAttestationFor(t, w.sim, rd64(gatewayReportData(ztCertPrefix, w.old.leaf.RawSubjectPublicKeyInfo)))
	w.mu.Unlock()
	r = runCLI(t, w.args("--app-id", hexOf(w.sim.AppID()))...)
	if r.code != 1 || !slices.Contains(r.failed(), checkKeyQuote+":1") || !slices.Contains(r.failed(), checkServedKey) {
		t.Fatalf("exit %d, failed %q; want key 1 and the served key to fail:\n%s", r.code, r.failed(), r.dump())
	}
}
