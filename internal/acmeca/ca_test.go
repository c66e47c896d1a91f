package acmeca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/certificate"
	"github.com/go-acme/lego/v4/challenge/dns01"
	"github.com/go-acme/lego/v4/lego"
	legolog "github.com/go-acme/lego/v4/log"
	"github.com/go-acme/lego/v4/registration"
	"github.com/letsencrypt/pebble/v2/core"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/miekg/dns"

	"github.com/tee-ingress/tee-ingress/internal/dnsserver"
)

// One DNS server for the whole package: lego's recursive nameservers are a
// package-wide variable, set once.
var (
	dnsSrv      *dnsserver.Server
	legoDNSOnce sync.Once
)

func TestMain(m *testing.M) {
	legolog.Logger = log.New(io.Discard, "", 0)
	var err error
	dnsSrv, err = dnsserver.Start("example.test")
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting dns server:", err)
		os.Exit(1)
	}
	code := m.Run()
	dnsSrv.Close()
	os.Exit(code)
}

func startCA(t *testing.T, opts Options) *CA {
	t.Helper()
	if opts.DNSAddr == "" {
		opts.DNSAddr = dnsSrv.Addr()
	}
	c, err := Start(opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// storeProvider is a DNS-01 provider that writes straight into the test DNS
// server.
type storeProvider struct{ store *dnsserver.Server }

func (p storeProvider) record(domain, keyAuth string) dns.RR {
	info := dns01.GetChallengeInfo(domain, keyAuth)
	return &dns.TXT{
		Hdr: dns.RR_Header{Name: info.EffectiveFQDN, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
		Txt: []string{info.Value},
	}
}

func (p storeProvider) Present(domain, _, keyAuth string) error {
	p.store.Add(p.record(domain, keyAuth))
	return nil
}

func (p storeProvider) CleanUp(domain, _, keyAuth string) error {
	if !p.store.Remove(p.record(domain, keyAuth)) {
		return fmt.Errorf("cleaning up %s: record not found", domain)
	}
	return nil
}

// Timeout keeps lego from sleeping its default 2 s before the first
// propagation check.
func (storeProvider) Timeout() (time.Duration, time.Duration) {
	return 10 * time.Second, 20 * time.Millisecond
}

type user struct {
	key crypto.PrivateKey
	reg *registration.Resource
}

func (u *user) GetEmail() string                        { return "" }
func (u *user) GetRegistration() *registration.Resource { return u.reg }
func (u *user) GetPrivateKey() crypto.PrivateKey        { return u.key }

func newClient(t *testing.T, c *CA) *lego.Client {
	t.Helper()
	legoDNSOnce.Do(func() {
		if err := dns01.AddRecursiveNameservers([]string{dnsSrv.Addr()})(nil); err != nil {
			t.Fatal(err)
		}
	})
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u := &user{key: key}
	// Built by hand: lego.NewConfig would read LEGO_CA_CERTIFICATES.
	client, err := lego.NewClient(&lego.Config{
		CADirURL:    c.DirectoryURL(),
		User:        u,
		UserAgent:   "tee-ingress-acmeca-test",
		HTTPClient:  c.HTTPClient(),
		Certificate: lego.CertificateConfig{KeyType: certcrypto.EC256, Timeout: 30 * time.Second},
	})
	if err != nil {
		t.Fatalf("lego.NewClient: %v", err)
	}
	if err := client.Challenge.SetDNS01Provider(storeProvider{dnsSrv}, dns01.DisableAuthoritativeNssPropagationRequirement()); err != nil {
		t.Fatal(err)
	}
	u.reg, err = client.Registration.Register(registration.RegisterOptions{TermsOfServiceAgreed: true})
	if err != nil {
		t.Fatalf("registering: %v", err)
	}
	return client
}

// verifyChain checks that the PEM bundle is a leaf for domain chaining to
// the CA's roots, and returns the leaf.
func verifyChain(t *testing.T, c *CA, bundle []byte, domain string) *x509.Certificate {
	t.Helper()
	var certs []*x509.Certificate
	for rest := bundle; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, cert)
	}
	if len(certs) < 2 {
		t.Fatalf("bundle has %d certificates, want leaf and intermediate", len(certs))
	}
	roots, err := c.Roots()
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, ic := range certs[1:] {
		inter.AddCert(ic)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{DNSName: domain, Roots: roots, Intermediates: inter}); err != nil {
		t.Fatalf("chain does not verify for %s: %v", domain, err)
	}
	return certs[0]
}

func noChallengeRecordsLeft(t *testing.T) {
	t.Helper()
	for _, rr := range dnsSrv.All() {
		if strings.HasPrefix(rr.Header().Name, "_acme-challenge.") {
			t.Errorf("challenge record left behind: %v", rr)
		}
	}
}

func TestIssuance(t *testing.T) {
	c := startCA(t, Options{})
	client := newClient(t, c)
	queries := dnsSrv.Queries()

	start := time.Now()
	res, err := client.Certificate.Obtain(certificate.ObtainRequest{Domains: []string{"app.example.test"}, Bundle: true})
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("Obtain: %v", err)
	}
	t.Logf("one DNS-01 issuance (new order to certificate) took %v", elapsed.Round(time.Millisecond))

	leaf := verifyChain(t, c, res.Certificate, "app.example.test")
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "app.example.test" {
		t.Errorf("leaf names %v, want [app.example.test]", leaf.DNSNames)
	}
	if _, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Errorf("leaf key %T, want the ECDSA key lego asked for", leaf.PublicKey)
	}
	if n := c.Orders(); n != 1 {
		t.Errorf("Orders() = %d, want 1", n)
	}
	if r := c.LastReplaces(); r != "" {
		t.Errorf("LastReplaces() = %q for a first order, want empty", r)
	}
	if dnsSrv.Queries() == queries {
		t.Error("no DNS queries during issuance: pebble did not validate against the test server")
	}
	noChallengeRecordsLeft(t)

	// A wildcard is validated at the base name's _acme-challenge.
	res, err = client.Certificate.Obtain(certificate.ObtainRequest{Domains: []string{"*.wild.example.test"}, Bundle: true})
	if err != nil {
		t.Fatalf("Obtain wildcard: %v", err)
	}
	leaf = verifyChain(t, c, res.Certificate, "anything.wild.example.test")
	if leaf.DNSNames[0] != "*.wild.example.test" {
		t.Errorf("wildcard leaf names %v", leaf.DNSNames)
	}
	if n := c.Orders(); n != 2 {
		t.Errorf("Orders() = %d after two issuances, want 2", n)
	}
}

func TestValidationFailsWithoutRecord(t *testing.T) {
	c := startCA(t, Options{})
	client := newClient(t, c)
	// The record is written but never answered: lego's own propagation check
	// would wait for it, so skip that check to let pebble see the absence.
	dnsSrv.SetHide(func(rr dns.RR) bool { return strings.HasPrefix(rr.Header().Name, "_acme-challenge.") })
	defer dnsSrv.SetHide(nil)
	if err := client.Challenge.SetDNS01Provider(storeProvider{dnsSrv},
		dns01.DisableAuthoritativeNssPropagationRequirement(),
		dns01.WrapPreCheck(func(string, string, string, dns01.PreCheckFunc) (bool, error) { return true, nil }),
	); err != nil {
		t.Fatal(err)
	}
	_, err := client.Certificate.Obtain(certificate.ObtainRequest{Domains: []string{"hidden.example.test"}, Bundle: true})
	if err == nil || !strings.Contains(err.Error(), "TXT") {
		t.Fatalf("Obtain with an unanswered challenge record: %v, want pebble's TXT validation error", err)
	}
	noChallengeRecordsLeft(t)
}

func TestRateLimitAndRenewalInfo(t *testing.T) {
	c := startCA(t, Options{})
	client := newClient(t, c)

	c.RateLimitNextOrders(1, 2500*time.Millisecond)
	_, err := client.Certificate.Obtain(certificate.ObtainRequest{Domains: []string{"rl.example.test"}, Bundle: true})
	var rl *acme.RateLimitedError
	if !errors.As(err, &rl) {
		t.Fatalf("Obtain under a rate limit: %v (%T), want *acme.RateLimitedError", err, err)
	}
	if rl.RetryAfter != "3" || rl.HTTPStatus != http.StatusTooManyRequests || rl.Type != "urn:ietf:params:acme:error:rateLimited" {
		t.Errorf("rate limit error %+v, want 429 rateLimited with Retry-After 3", rl)
	}
	if n := c.Orders(); n != 0 {
		t.Errorf("Orders() = %d after a rate-limited order, want 0", n)
	}

	// The limit covered one order; the next goes through.
	res, err := client.Certificate.Obtain(certificate.ObtainRequest{Domains: []string{"rl.example.test"}, Bundle: true})
	if err != nil {
		t.Fatalf("Obtain after the limit: %v", err)
	}
	leaf := verifyChain(t, c, res.Certificate, "rl.example.test")

	// ARI: the window set is the window lego reads.
	// A window that has passed: lego must want to renew now.
	start := time.Now().Add(-2 * time.Hour).Truncate(time.Second).UTC()
	end := start.Add(time.Hour)
	if err := c.SetRenewalInfo(leaf, start, end); err != nil {
		t.Fatalf("SetRenewalInfo: %v", err)
	}
	info, err := client.Certificate.GetRenewalInfo(certificate.RenewalInfoRequest{Cert: leaf})
	if err != nil {
		t.Fatalf("GetRenewalInfo: %v", err)
	}
	if !info.SuggestedWindow.Start.Equal(start) || !info.SuggestedWindow.End.Equal(end) {
		t.Errorf("ARI window %v - %v, want %v - %v", info.SuggestedWindow.Start, info.SuggestedWindow.End, start, end)
	}
	if at := info.ShouldRenewAt(time.Now(), 0); at == nil || time.Since(*at) > time.Minute {
		t.Errorf("ShouldRenewAt = %v for a window that has passed, want now", at)
	}

	// A renewal names the certificate it replaces.
	certID, err := certificate.MakeARICertID(leaf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Certificate.Obtain(certificate.ObtainRequest{
		Domains: []string{"rl.example.test"}, Bundle: true, ReplacesCertID: certID,
	}); err != nil {
		t.Fatalf("renewal Obtain: %v", err)
	}
	if got := c.LastReplaces(); got != certID {
		t.Errorf("LastReplaces() = %q, want %q", got, certID)
	}
	if n := c.Orders(); n != 2 {
		t.Errorf("Orders() = %d, want 2", n)
	}
}

func TestCertLifetime(t *testing.T) {
	c := startCA(t, Options{CertLifetime: 2 * time.Hour})
	res, err := newClient(t, c).Certificate.Obtain(certificate.ObtainRequest{Domains: []string{"short.example.test"}, Bundle: true})
	if err != nil {
		t.Fatalf("Obtain: %v", err)
	}
	leaf := verifyChain(t, c, res.Certificate, "short.example.test")
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d < 2*time.Hour-2*time.Second || d > 2*time.Hour {
		t.Errorf("lifetime %v, want 2h", d)
	}
}

func TestDirectoryAndRoots(t *testing.T) {
	c := startCA(t, Options{CAAIdentities: []string{"dev.tee-ingress.test"}})
	req, _ := http.NewRequest(http.MethodGet, c.DirectoryURL(), nil)
	req.Header.Set("User-Agent", "test")
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("GET directory: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`"newOrder"`, `"renewalInfo"`, `"dev.tee-ingress.test"`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("directory lacks %s: %s", want, body)
		}
	}
	pemBytes, err := c.RootsPEM()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(pemBytes)
	if b == nil {
		t.Fatal("RootsPEM is not PEM")
	}
	root, err := x509.ParseCertificate(b.Bytes)
	if err != nil || !root.IsCA {
		t.Fatalf("root: %v, IsCA=%v", err, root != nil && root.IsCA)
	}
	// The roots are the issuing CA, not the HTTPS server's certificate.
	if resp.TLS != nil && resp.TLS.PeerCertificates[0].Equal(root) {
		t.Error("RootsPEM returned the HTTPS server certificate")
	}
}

func TestStartRejectsBadOptions(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{}, "Options.DNSAddr is required"},
		{Options{DNSAddr: "127.0.0.1"}, "is not host:port"},
		{Options{DNSAddr: "127.0.0.1:notaport"}, "no valid port"},
		{Options{DNSAddr: "127.0.0.1:0"}, "no valid port"},
		{Options{DNSAddr: "127.0.0.1:53", CertLifetime: -time.Second}, "Options.CertLifetime"},
		{Options{DNSAddr: "127.0.0.1:53", CertLifetime: time.Millisecond}, "at least 1s"},
		{Options{DNSAddr: "127.0.0.1:53", AuthzReusePercent: 101}, "Options.AuthzReusePercent"},
		{Options{DNSAddr: "127.0.0.1:53", TLSPort: 70000}, "Options.TLSPort"},
	} {
		c, err := Start(tc.opts)
		if err == nil {
			c.Close()
			t.Errorf("Start(%+v) succeeded, want an error naming %q", tc.opts, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Start(%+v) = %v, want it to mention %q", tc.opts, err, tc.want)
		}
	}
	if _, ok := os.LookupEnv("PEBBLE_VA_NOSLEEP"); ok {
		t.Error("PEBBLE_VA_NOSLEEP left set in the environment after Start")
	}
}

func TestSetRenewalInfoErrors(t *testing.T) {
	c := startCA(t, Options{})
	now := time.Now()
	if err := c.SetRenewalInfo(nil, now, now.Add(time.Hour)); err == nil || !strings.Contains(err.Error(), "leaf is nil") {
		t.Errorf("nil leaf: %v", err)
	}
	stranger := &x509.Certificate{SerialNumber: big.NewInt(123456789)}
	if err := c.SetRenewalInfo(stranger, now, now.Add(time.Hour)); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("certificate pebble did not issue: %v", err)
	}
	if err := c.SetRenewalInfo(stranger, now, now); err == nil || !strings.Contains(err.Error(), "not after start") {
		t.Errorf("empty window: %v", err)
	}
}

func TestRetryAfterWriter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		preset string
		want   string
	}{
		{"added to a 200", 200, "", "1"},
		{"kept when pebble set one", 200, "7", "7"},
		{"not added to errors", 400, "", ""},
	} {
		rec := httptest.NewRecorder()
		w := &retryAfterWriter{ResponseWriter: rec}
		if tc.preset != "" {
			w.Header().Set("Retry-After", tc.preset)
		}
		if tc.status != 200 {
			w.WriteHeader(tc.status)
		}
		_, _ = w.Write([]byte("{}"))
		if got := rec.Header().Get("Retry-After"); got != tc.want || rec.Code != tc.status {
			t.Errorf("%s: Retry-After %q status %d, want %q %d", tc.name, got, rec.Code, tc.want, tc.status)
		}
	}
}

func TestOrderReplaces(t *testing.T) {
	for body, want := range map[string]string{
		`{"protected":"e30","payload":"eyJyZXBsYWNlcyI6ImFiYy5kZWYifQ","signature":"x"}`: "abc.def",
		`{"payload":"eyJpZGVudGlmaWVycyI6W119"}`:                                         "",
		`not json`:                                                                       "",
		`{"payload":"!!!"}`:                                                              "",
	} {
		if got := orderReplaces([]byte(body)); got != want {
			t.Errorf("orderReplaces(%s) = %q, want %q", body, got, want)
		}
	}
}

// TestAliasSignedSerial files an order the way pebble does, under the hex of
// the serial's magnitude, and looks it up the way pebble's new-order handler
// does, under the hex of the certID serial lego sends (letsencrypt/pebble#550).
func TestAliasSignedSerial(t *testing.T) {
	aki := []byte{0x45, 0x30, 0x08, 0x34}
	certID := func(serial uint64) (string, string) {
		leaf := &x509.Certificate{SerialNumber: new(big.Int).SetUint64(serial), AuthorityKeyId: aki}
		id, err := certificate.MakeARICertID(leaf)
		if err != nil {
			t.Fatal(err)
		}
		b, err := base64.RawURLEncoding.DecodeString(id[strings.IndexByte(id, '.')+1:])
		if err != nil {
			t.Fatal(err)
		}
		return id, fmt.Sprintf("%x", b)
	}
	file := func(store *db.MemoryStore, serial uint64) *core.Order {
		o := &core.Order{ID: fmt.Sprint(serial), CertificateObject: &core.Certificate{ID: fmt.Sprintf("%x", new(big.Int).SetUint64(serial).Bytes())}}
		if err := store.AddOrderByIssuedSerial(o); err != nil {
			t.Fatal(err)
		}
		return o
	}

	// Seven bytes with the top bit set: DER adds a sign byte.
	store := db.NewMemoryStore()
	o := file(store, 0x859ff78a5a457e)
	replaces, key := certID(0x859ff78a5a457e)
	if key != "00859ff78a5a457e" {
		t.Fatalf("lego's certID serial is %s, want the DER value bytes 00859ff78a5a457e", key)
	}
	if _, err := store.GetOrderByIssuedSerial(key); err == nil {
		t.Fatal("pebble found the signed serial without the alias: the workaround is no longer needed")
	}
	aliasSignedSerial(store, replaces)
	got, err := store.GetOrderByIssuedSerial(key)
	if err != nil || got != o {
		t.Fatalf("lookup by the signed serial after the alias: %v, %v", got, err)
	}
	if o.CertificateObject.ID != "859ff78a5a457e" {
		t.Fatalf("the order's certificate ID became %q; pebble builds the certificate URL from it", o.CertificateObject.ID)
	}
	// Both keys name one order, so a replacement through the alias marks
	// it replaced for the plain key too (pebble's alreadyReplaced check).
	if err := store.UpdateReplacedOrder(key, true); err != nil {
		t.Fatal(err)
	}
	if plain, err := store.GetOrderByIssuedSerial("859ff78a5a457e"); err != nil || !plain.IsReplaced {
		t.Fatalf("the order under its plain serial: %+v, %v", plain, err)
	}

	// Eight bytes below 2^63 (most pebble serials): no sign byte, no alias.
	store = db.NewMemoryStore()
	file(store, 0x1122334455667788)
	replaces, key = certID(0x1122334455667788)
	aliasSignedSerial(store, replaces)
	if key != "1122334455667788" {
		t.Fatalf("certID serial %s", key)
	}
	if _, err := store.GetOrderByIssuedSerial("00" + key); err == nil {
		t.Fatal("an alias was filed for a serial without a sign byte")
	}

	// Garbage and certIDs of certificates pebble never issued change nothing.
	_, unknown := certID(0x80000000000001)
	for _, r := range []string{"", ".", "no-dot", "a.!!!", "a.AA", "a.AIA", replacesFor(aki, unknown)} {
		aliasSignedSerial(store, r)
	}
	if _, err := store.GetOrderByIssuedSerial(unknown); err == nil {
		t.Fatal("an alias was filed for a serial pebble never issued")
	}
}

func replacesFor(aki []byte, serialHex string) string {
	b, _ := hex.DecodeString(serialHex)
	return base64.RawURLEncoding.EncodeToString(aki) + "." + base64.RawURLEncoding.EncodeToString(b)
}

// FuzzOrderReplaces feeds arbitrary new-order bodies to the JWS payload
// reader, which sees every client's bytes before pebble does: it must not
// panic, and it must read back the "replaces" of a well-formed payload.
func FuzzOrderReplaces(f *testing.F) {
	f.Add([]byte(`{"protected":"e30","payload":"eyJyZXBsYWNlcyI6ImFiYy5kZWYifQ","signature":"x"}`), "abc.def")
	f.Add([]byte(`{"payload":""}`), "")
	f.Add([]byte(`{"payload":"eyJyZXBsYWNlcyI6MX0"}`), "x\"y")
	f.Fuzz(func(t *testing.T, body []byte, replaces string) {
		aliasSignedSerial(db.NewMemoryStore(), orderReplaces(body))
		if !utf8.ValidString(replaces) {
			return
		}
		payload, err := json.Marshal(map[string]any{"identifiers": []any{}, "replaces": replaces})
		if err != nil {
			t.Fatal(err)
		}
		jws, _ := json.Marshal(map[string]string{"protected": "e30", "payload": base64.RawURLEncoding.EncodeToString(payload), "signature": "c2ln"})
		if got := orderReplaces(jws); got != replaces {
			t.Fatalf("orderReplaces = %q, want %q", got, replaces)
		}
	})
}
