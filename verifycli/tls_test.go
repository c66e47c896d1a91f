package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/evidence/agent"
	"github.com/tee-ingress/tee-ingress/evidence/dstackfmt"
	"github.com/tee-ingress/tee-ingress/internal/agentsim"
)

// tlsWorld is the attested self-signed mode on loopback: a self-signed
// certificate and evidence's /attestation handler over the simulator.
type tlsWorld struct {
	sim      *agentsim.Simulator
	agent    *agent.Agent
	cert     tls.Certificate
	srv      *httptest.Server
	rootFile string
	tamper   atomic.Pointer[tamperFunc]
}

// newTLSWorld serves an attestation for attestedDER (nil: the served
// certificate's).
func newTLSWorld(t *testing.T, attestedDER []byte) *tlsWorld {
	t.Helper()
	w := &tlsWorld{sim: newSimulator(t, worldSeed), cert: selfSigned(t, "tee.example.test")}
	sock := filepath.Join(shortTempDir(t), "dstack.sock")
	if err := w.sim.Serve(sock); err != nil {
		t.Fatal(err)
	}
	var err error
	if w.agent, err = agent.New(agent.Options{Endpoint: sock}); err != nil {
		t.Fatal(err)
	}
	if attestedDER == nil {
		attestedDER = w.cert.Leaf.Raw
	}
	h, err := evidence.NewAttestationHandler(evidence.AttestationConfig{Quoter: w.agent, CertDER: attestedDER, Rate: 1000, Burst: 1000})
	if err != nil {
		t.Fatal(err)
	}
	w.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if f := w.tamper.Load(); f != nil && (*f)(rw, r) {
			return
		}
		h.ServeHTTP(rw, r)
	}))
	w.srv.TLS = &tls.Config{Certificates: []tls.Certificate{w.cert}}
	w.srv.StartTLS()
	t.Cleanup(w.srv.Close)
	w.rootFile = writeFile(t, t.TempDir(), "sim-root.pem", w.sim.RootPEM())
	return w
}

func (w *tlsWorld) setTamper(f tamperFunc) { w.tamper.Store(&f) }

func (w *tlsWorld) args(extra ...string) []string {
	return append([]string{"tls", "https://" + w.srv.Listener.Addr().String(), "--json", "--tdx-root", w.rootFile}, extra...)
}

func TestTLSEndToEnd(t *testing.T) {
	w := newTLSWorld(t, nil)
	r := runCLI(t, w.args("--app-id", hexOf(w.sim.AppID()), "--compose-hash", hexOf(w.sim.ComposeHash()))...)
	if r.code != 0 {
		t.Fatalf("exit %d, want 0:\n%s", r.code, r.dump())
	}
	fp := sha256.Sum256(w.cert.Leaf.Raw)
	for _, name := range []string{checkTLSConnect, checkAttestationGet, evidence.CheckFingerprint, evidence.CheckQuoteSignature,
		evidence.CheckQuoteDebug, evidence.CheckReportData, evidence.CheckRTMR + "3", evidence.CheckAppID, evidence.CheckComposeHash} {
		if c := r.check(t, name); c.Status != "pass" {
			t.Errorf("%s: %s, want pass", name, c.Status)
		}
	}
	if got, want := r.check(t, evidence.CheckReportData).Got, hex.EncodeToString(fp[:])+r.report.Nonce; got != want || len(r.report.Nonce) != 64 {
		t.Errorf("report_data %s, want fingerprint || nonce %s", got, want)
	}
	if r.report.Identity == nil || r.report.Identity.AppID != hexOf(w.sim.AppID()) {
		t.Errorf("identity %+v", r.report.Identity)
	}

	// A name for SNI, connecting to the address.
	r = runCLI(t, "tls", "https://tee.example.test:443", "--connect", w.srv.Listener.Addr().String(), "--tdx-root", w.rootFile)
	if r.code != 0 || !strings.Contains(r.stdout, "result: PASS") {
		t.Fatalf("with --connect: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

func TestTLSTampering(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T) *tlsWorld
		want  []string
	}{
		{"self-signed fingerprint mismatch: the attestation is for another certificate", func(t *testing.T) *tlsWorld {
			return newTLSWorld(t, selfSigned(t, "tee.example.test").Leaf.Raw)
		}, []string{evidence.CheckFingerprint, evidence.CheckReportData}},

		{"stale nonce: an attestation for an old nonce is replayed", func(t *testing.T) *tlsWorld {
			w := newTLSWorld(t, nil)
			fp := sha256.Sum256(w.cert.Leaf.Raw)
			old := attestationFor(t, w.sim, fp, [32]byte{9, 9, 9})
			w.setTamper(func(rw http.ResponseWriter, r *http.Request) bool {
				serveBytes(rw, old)
				return true
			})
			return w
		}, []string{evidence.CheckReportData}},

		{"attestation from an untrusted TEE", func(t *testing.T) *tlsWorld {
			w := newTLSWorld(t, nil)
			other := newSimulator(t, otherSeed)
			fp := sha256.Sum256(w.cert.Leaf.Raw)
			w.setTamper(func(rw http.ResponseWriter, r *http.Request) bool {
				serveBytes(rw, attestationFor(t, other, fp, requestNonce(t, r)))
				return true
			})
			return w
		}, []string{evidence.CheckQuoteSignature}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := tc.setup(t)
			r := runCLI(t, w.args()...)
			if r.code != 1 || !slices.Equal(r.failed(), slices.Sorted(slices.Values(tc.want))) {
				t.Fatalf("exit %d, failed %q; want exit 1, failed %q:\n%s", r.code, r.failed(), tc.want, r.dump())
			}
		})
	}
}

// TestTLSWithoutNonce: a server that refuses nonces is checked without one
// and the missing freshness is a warning (a failure with --strict).
func TestTLSWithoutNonce(t *testing.T) {
	w := newTLSWorld(t, nil)
	w.setTamper(func(rw http.ResponseWriter, r *http.Request) bool {
		if r.URL.Query().Has("nonce") {
			http.Error(rw, "nonces not supported", http.StatusBadRequest)
			return true
		}
		return false
	})
	r := runCLI(t, w.args()...)
	if c := r.check(t, checkAttestationGet); r.code != 0 || c.Status != "warn" || !strings.Contains(c.Detail, "HTTP 400") {
		t.Fatalf("exit %d, %s %+v; want exit 0 and a warning naming HTTP 400:\n%s", r.code, checkAttestationGet, c, r.dump())
	}
	if got := r.check(t, evidence.CheckReportData); got.Status != "pass" || !strings.HasSuffix(got.Got, strings.Repeat("0", 64)) {
		t.Errorf("report_data %+v, want the zero-nonce binding", got)
	}
	if r := runCLI(t, w.args("--strict")...); r.code != 1 {
		t.Errorf("--strict: exit %d, want 1", r.code)
	}
}

// attestationFor is an /attestation body quoting fp || nonce.
func attestationFor(t testing.TB, s *agentsim.Simulator, fp, nonce [32]byte) []byte {
	t.Helper()
	rd := evidence.BundleReportData(fp, nonce)
	q, err := evidence.ParseQuoteJSON(quoteFor(t, s, rd))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(evidence.Attestation{CertFingerprint: hex.EncodeToString(fp[:]), Quote: hex.EncodeToString(q.Quote),
		EventLog: q.EventLog, ReportData: hex.EncodeToString(rd[:]), VMConfig: q.VMConfig})
	return b
}

// raTLSCert is a self-signed certificate in dstack's RA-TLS form for key's
// public key, carrying the simulator's attestation over boundSPKI's
// report_data (the certificate's own SPKI when nil), or only the extensions
// extra when given.
func raTLSCert(t *testing.T, sim *agentsim.Simulator, boundSPKI []byte, extra ...pkix.Extension) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	spki, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if boundSPKI == nil {
		boundSPKI = spki
	}
	exts := extra
	if exts == nil {
		q, err := evidence.ParseQuoteJSON(quoteFor(t, sim, evidence.RATLSReportData(boundSPKI)))
		if err != nil {
			t.Fatal(err)
		}
		att, err := evidence.EncodeDstackAttestation(q)
		if err != nil {
			t.Fatal(err)
		}
		ext, err := evidence.RATLSExtension(att)
		if err != nil {
			t.Fatal(err)
		}
		exts = []pkix.Extension{ext}
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "RA-TLS"}, DNSNames: []string{"tee.example.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtraExtensions: exts}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// TestTLSRATLS: a server presenting a dstack RA-TLS certificate is verified
// from the handshake alone (it serves no /attestation); a certificate whose
// attestation binds another key, or that lost its attestation extension,
// fails the check that names it.
func TestTLSRATLS(t *testing.T) {
	sim := newSimulator(t, worldSeed)
	root := writeFile(t, t.TempDir(), "sim-root.pem", sim.RootPEM())
	serve := func(t *testing.T, c tls.Certificate) string {
		srv := httptest.NewUnstartedServer(http.NotFoundHandler())
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{c}}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv.Listener.Addr().String()
	}
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherSPKI, _ := x509.MarshalPKIXPublicKey(&otherKey.PublicKey)
	appID, _ := asn1.Marshal([]byte("app"))
	for _, tc := range []struct {
		name   string
		cert   tls.Certificate
		failed []string
	}{
		{"genuine", raTLSCert(t, sim, nil), nil},
		{"the attestation binds another key", raTLSCert(t, sim, otherSPKI), []string{prefixRATLS + evidence.CheckReportData}},
		{"the attestation extension removed", raTLSCert(t, sim, nil, pkix.Extension{Id: dstackfmt.OIDAppID, Value: appID}), []string{evidence.CheckRATLS}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := serve(t, tc.cert)
			r := runCLI(t, "tls", "https://"+addr, "--json", "--tdx-root", root, "--app-id", hexOf(sim.AppID()))
			if tc.failed == nil {
				if r.code != 0 || r.check(t, evidence.CheckRATLS).Status != "pass" || r.check(t, prefixRATLS+evidence.CheckQuoteSignature).Status != "pass" ||
					r.check(t, prefixRATLS+evidence.CheckAppID).Status != "pass" {
					t.Fatalf("exit %d:\n%s", r.code, r.dump())
				}
				return
			}
			if r.code != 1 || !slices.Equal(r.failed(), tc.failed) {
				t.Fatalf("exit %d, failed %q; want %q:\n%s", r.code, r.failed(), tc.failed, r.dump())
			}
		})
	}
}
