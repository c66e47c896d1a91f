package evidence

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

// The whole path: the simulator's quotes, the publisher writing
// EVIDENCE_DIR, the handler on a real HTTP server, the fetcher, and
// verification under the simulator's root. Under Intel's root alone exactly
// the signature check fails. (The guest-agent client over the unix socket
// is package agent's; cmd/ingress's end-to-end tests run all of it.)
func TestRoundTripThroughSimulator(t *testing.T) {
	for _, stripped := range []bool{false, true} {
		name := "full-log"
		if stripped {
			name = "stripped-log"
		}
		t.Run(name, func(t *testing.T) {
			s := newSim(t, stripped)
			agent := simQuoter{s}
			dir := t.TempDir()
			p := newPublisher(t, agent, dir)
			if _, err := p.Publish(context.Background(), testInput(t, newTestPKI(t))); err != nil {
				t.Fatal(err)
			}
			srv := served(t, p, agent, HandlerConfig{})
			client := &http.Client{Timeout: 10 * time.Second}
			files, err := FetchBundle(context.Background(), client, srv.URL+"/evidences/", nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(files) != 8 {
				t.Fatalf("fetched %d files, want 8", len(files))
			}
			for name, f := range files {
				if strings.Contains(string(f), "PRIVATE KEY") {
					t.Fatalf("%s contains PRIVATE KEY", name)
				}
			}
			pb, err := ParseBundle(files)
			if err != nil {
				t.Fatal(err)
			}
			opts := VerifyOptions{TrustedRootsPEM: s.RootPEM(), AppID: hex.EncodeToString(s.AppID()), ComposeJSON: s.ComposeJSON()}
			cs := VerifyBundle(pb, opts)
			if Failed(cs, false) {
				t.Fatalf("round trip fails: %v%s", failedNames(cs), dumpChecks(cs))
			}
			for _, n := range []string{CheckQuoteSignature, CheckReportData, CheckRTMR + "3", CheckAppID, CheckComposeHash, CheckFilesListed} {
				wantStatus(t, cs, n, Pass)
			}
			wantStatus(t, cs, CheckInstanceID, Info) // reported, nothing to compare it with
			if got := checkByName(t, cs, CheckInstanceID).Got; got != hex.EncodeToString(s.InstanceID()) {
				t.Errorf("instance id %s, want %x", got, s.InstanceID())
			}
			if pb.AccountURI() != "https://acme.example/acme/acct/12345" {
				t.Errorf("account uri %q", pb.AccountURI())
			}
			if leaf := pb.Leaf(CertFile); leaf == nil || leaf.Subject.CommonName != "example.com" {
				t.Errorf("leaf of cert.pem: %v", leaf)
			}

			// Intel's root only: the simulator is not a TEE.
			cs = VerifyBundle(pb, VerifyOptions{AppID: opts.AppID, ComposeJSON: opts.ComposeJSON})
			if got := failedNames(cs); !slices.Equal(got, []string{CheckQuoteSignature}) {
				t.Fatalf("under Intel's root failed %v, want only %s%s", got, CheckQuoteSignature, dumpChecks(cs))
			}
			if sig := checkByName(t, cs, CheckQuoteSignature); !strings.Contains(sig.Got, "certificate signed by unknown authority") {
				t.Errorf("signature failure: %q", sig.Got)
			}
			if d := checkByName(t, cs, CheckAppID).Detail; !strings.Contains(d, "proves nothing") {
				t.Errorf("app-id of an unauthenticated quote: %q", d)
			}

			// A live quote through the handler, for a fresh nonce.
			var nonce [32]byte
			rand.Read(nonce[:])
			live, err := FetchBundle(context.Background(), client, srv.URL+"/evidences/", &nonce)
			if err != nil {
				t.Fatal(err)
			}
			lpb, _ := ParseBundle(live)
			lopts := opts
			lopts.Nonce = &nonce
			if cs := VerifyBundle(lpb, lopts); Failed(cs, false) {
				t.Fatalf("live quote fails: %v%s", failedNames(cs), dumpChecks(cs))
			}

			// The same bundle from disk.
			dpb, err := LoadBundleDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if cs := VerifyBundle(dpb, opts); Failed(cs, false) {
				t.Fatalf("disk bundle fails: %v", failedNames(cs))
			}
		})
	}
}

// selfSigned makes the certificate of the self-signed mode.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "tee"}, DNSNames: []string{"localhost"},
		IPAddresses: nil, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestAttestationSelfSigned(t *testing.T) {
	s := newSim(t, true)
	cert := selfSigned(t)
	h, err := NewAttestationHandler(AttestationConfig{Quoter: simQuoter{s}, CertDER: cert.Certificate[0]})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	defer srv.Close()
	// The verifier trusts nothing but pins what the connection presented.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	fetch := func(path string) ([]byte, []byte, int) {
		t.Helper()
		resp, err := client.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return b, resp.TLS.PeerCertificates[0].Raw, resp.StatusCode
	}
	opts := VerifyOptions{TrustedRootsPEM: s.RootPEM(), AppID: hex.EncodeToString(s.AppID())}

	body, pinned, code := fetch("/attestation")
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	cs := VerifyAttestation(body, pinned, opts)
	if Failed(cs, false) {
		t.Fatalf("attestation fails: %v%s", failedNames(cs), dumpChecks(cs))
	}
	wantStatus(t, cs, CheckFingerprint, Pass)
	wantStatus(t, cs, CheckReportData, Pass)
	// Cached: the same bytes again.
	if again, _, _ := fetch("/attestation"); string(again) != string(body) {
		t.Fatal("attestation without nonce not cached")
	}

	// A man in the middle presents another certificate and relays the body.
	mitm := selfSigned(t)
	cs = VerifyAttestation(body, mitm.Certificate[0], opts)
	if got := failedNames(cs); !slices.Equal(got, []string{CheckFingerprint, CheckReportData}) {
		t.Fatalf("mitm: failed %v", got)
	}

	nonce := [32]byte{0xaa, 31: 0x55}
	body, pinned, code = fetch("/attestation?nonce=" + hex.EncodeToString(nonce[:]))
	if code != 200 {
		t.Fatalf("nonce: %d %s", code, body)
	}
	o := opts
	o.Nonce = &nonce
	if cs := VerifyAttestation(body, pinned, o); Failed(cs, false) {
		t.Fatalf("attestation with nonce fails: %v", failedNames(cs))
	}
	other := [32]byte{1}
	o.Nonce = &other
	if got := failedNames(VerifyAttestation(body, pinned, o)); !slices.Equal(got, []string{CheckReportData}) {
		t.Fatalf("replayed nonce: failed %v", got)
	}
	// Under Intel's root alone the simulator's quote is refused.
	if got := failedNames(VerifyAttestation(body, pinned, VerifyOptions{Nonce: &nonce})); !slices.Equal(got, []string{CheckQuoteSignature}) {
		t.Fatalf("Intel root: failed %v", got)
	}

	for _, c := range []struct {
		path string
		code int
	}{
		{"/attestation?nonce=12", 400},
		{"/attestation?nonce=" + strings.Repeat("0", 64) + "&nonce=" + strings.Repeat("0", 64), 400},
		{"/attestation/x", 404},
		{"/other", 404},
	} {
		if _, _, code := fetch(c.path); code != c.code {
			t.Errorf("%s: %d, want %d", c.path, code, c.code)
		}
	}
	resp, err := client.Post(srv.URL+"/attestation", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", resp.StatusCode)
	}

	for _, bad := range []string{``, `[]`, `{"certFingerprint":"x"} {}`} {
		cs := VerifyAttestation([]byte(bad), pinned, opts)
		if len(cs) != 1 || cs[0].Name != CheckAttestationJSON || cs[0].Status != Fail {
			t.Errorf("body %q: %+v", bad, cs)
		}
	}
	if _, err := NewAttestationHandler(AttestationConfig{Quoter: simQuoter{s}}); err == nil {
		t.Fatal("no certificate accepted")
	}
}

func TestAttestationFailsClosed(t *testing.T) {
	q := newUnsignedQuoter(t)
	q.set(func(u *unsignedQuoter) { u.err = errTestQuoter })
	h, err := NewAttestationHandler(AttestationConfig{Quoter: q, CertDER: []byte{1}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, body := do(t, "GET", srv.URL+"/attestation", nil)
	if resp.StatusCode != http.StatusBadGateway || strings.Contains(body, "unreachable") {
		t.Fatalf("agent down: %d %q", resp.StatusCode, body)
	}
	// Not cached: once the agent is back, it answers.
	q.set(func(u *unsignedQuoter) { u.err = nil })
	if resp, _ := do(t, "GET", srv.URL+"/attestation", nil); resp.StatusCode != 200 {
		t.Fatalf("after recovery: %d", resp.StatusCode)
	}
}
