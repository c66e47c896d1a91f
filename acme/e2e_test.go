package acme

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	legoacme "github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/certificate"
	"github.com/go-acme/lego/v4/challenge/dns01"
	"github.com/miekg/dns"

	"github.com/tee-ingress/tee-ingress/dnscaa"
	"github.com/tee-ingress/tee-ingress/dnsread"
	"github.com/tee-ingress/tee-ingress/internal/acmeca"
	"github.com/tee-ingress/tee-ingress/internal/cfemu"
	"github.com/tee-ingress/tee-ingress/internal/dnsserver"
)

const cfToken = "test-token-0123456789"

// world is the outside of a TEE on loopback: an authoritative DNS server, the
// Cloudflare API emulator writing into it, and pebble validating against it.
type world struct {
	dns *dnsserver.Server
	cf  *cfemu.Emulator
	ca  *acmeca.CA
	dp  *dnscaa.Client
	cp  *dnscaa.ChallengeProvider
}

func newWorld(t testing.TB) *world {
	t.Helper()
	srv, err := dnsserver.Start("example.test", "delegated.test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	// Records unrelated to us that must survive every test byte for byte.
	srv.Add(
		dnsserver.MustRR(`example.test. 300 IN TXT "v=spf1 include:_spf.example.net ~all"`),
		dnsserver.MustRR(`sel._domainkey.example.test. 300 IN TXT "v=DKIM1; k=rsa; p=MIGfMA0GCSq"`),
		dnsserver.MustRR(`example.test. 300 IN MX 10 mail.example.test.`),
		dnsserver.MustRR(`example.test. 300 IN CAA 0 iodef "mailto:security@example.test"`),
		dnsserver.MustRR(`other.example.test. 300 IN CNAME elsewhere.example.net.`),
	)
	cf := cfemu.New(srv, cfToken)
	t.Cleanup(cf.Close)
	ca, err := acmeca.Start(acmeca.Options{DNSAddr: srv.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ca.Close)
	dp, err := dnscaa.NewProvider(dnscaa.ProviderConfig{
		Name: "cloudflare",
		Lookup: func(k string) (string, bool) {
			return map[string]string{"CLOUDFLARE_API_TOKEN": cfToken}[k], k == "CLOUDFLARE_API_TOKEN"
		},
		HTTPClient:  cf.HTTPClient(),
		CallTimeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := dnscaa.NewChallengeProvider(dp, dnscaa.ChallengeOptions{
		Resolver:           &dnsread.Resolver{Servers: []string{srv.Addr()}},
		CheckServers:       []string{srv.Addr()},
		PropagationTimeout: 3 * time.Second,
		PollInterval:       20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &world{dns: srv, cf: cf, ca: ca, dp: dp, cp: cp}
}

// pinner counts PinCAA calls on top of dnscaa's, as cmd/ingress wires it.
type pinner struct {
	dnscaa.Pinner
	calls atomic.Int32
}

func (p *pinner) PinCAA(ctx context.Context, domains []string, issuer, accountURI, method string) error {
	p.calls.Add(1)
	return p.Pinner.PinCAA(ctx, domains, issuer, accountURI, method)
}

func (w *world) config(t testing.TB, stateDir string) Config {
	return Config{
		DirectoryURL: w.ca.DirectoryURL(),
		Keys:         &FileKeySource{Path: filepath.Join(stateDir, "account.key")},
		StateDir:     stateDir,
		HTTPClient:   w.ca.HTTPClient(),
		Solver:       w.cp,
		// The provider has already waited for every server to answer, and
		// lego's own check would ask the system resolver.
		DNS01Options: []dns01.ChallengeOption{
			dns01.AddRecursiveNameservers([]string{w.dns.Addr()}),
			dns01.WrapPreCheck(func(string, string, string, dns01.PreCheckFunc) (bool, error) { return true, nil }),
		},
		Backoff: Backoff{Initial: 50 * time.Millisecond, Max: 400 * time.Millisecond},
	}
}

func (w *world) manager(t testing.TB, cfg Config) *Manager {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// checkIssued asserts the chain verifies to pebble's root for every name and
// names exactly domains.
func (w *world) checkIssued(t *testing.T, c *Certificate, domains []string) {
	t.Helper()
	roots, err := w.ca.Roots()
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	rest := c.ChainPEM
	n := 0
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			t.Fatalf("chain holds a %q block", b.Type)
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			inter.AddCert(cert)
		}
		n++
	}
	if n < 2 {
		t.Fatalf("chain has %d certificates, want leaf and intermediate", n)
	}
	for _, d := range domains {
		if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: strings.Replace(d, "*", "anything", 1)}); err != nil {
			t.Fatalf("chain does not verify for %s: %v", d, err)
		}
	}
	got, want := slices.Sorted(slices.Values(c.Leaf.DNSNames)), slices.Sorted(slices.Values(domains))
	if !slices.Equal(got, want) {
		t.Fatalf("certificate names %v, want exactly %v", got, want)
	}
}

func TestIssuanceEndToEnd(t *testing.T) {
	w := newWorld(t)
	// _acme-challenge of deleg.example.test is delegated to another zone.
	w.dns.Add(dnsserver.MustRR(`_acme-challenge.deleg.example.test. 300 IN CNAME deleg.delegated.test.`))
	before := w.dns.All()
	cases := map[string][]string{
		"one name":          {"app.example.test"},
		"several names":     {"a.example.test", "b.example.test", "c.example.test"},
		"wildcard and apex": {"example.test", "*.example.test"},
		"cname delegation":  {"deleg.example.test"},
	}
	m := w.manager(t, w.config(t, t.TempDir()))
	for name, domains := range cases {
		t.Run(name, func(t *testing.T) {
			orders := w.ca.Orders()
			c, err := m.Ensure(context.Background(), domains)
			if err != nil {
				t.Fatal(err)
			}
			w.checkIssued(t, c, domains)
			if got := w.ca.Orders() - orders; got != 1 {
				t.Fatalf("%d orders, want 1", got)
			}
		})
	}
	// Every challenge record was removed; nothing else changed.
	if after := w.dns.All(); !sameRRs(before, after) {
		t.Fatalf("zone changed by issuance:\nbefore %v\nafter  %v", before, after)
	}
}

func sameRRs(a, b []dns.RR) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].String() != b[i].String() {
			return false
		}
	}
	return true
}

func TestCAAPinnedToRegisteredAccount(t *testing.T) {
	w := newWorld(t)
	p := &pinner{Pinner: dnscaa.Pinner{Provider: w.dp, Apply: dnscaa.ApplyOptions{Resolver: &dnsread.Resolver{Servers: []string{w.dns.Addr()}}}}}
	cfg := w.config(t, t.TempDir())
	cfg.CAA = p
	m := w.manager(t, cfg)
	if _, err := m.Ensure(context.Background(), []string{"app.example.test", "*.example.test"}); err != nil {
		t.Fatal(err)
	}
	if p.calls.Load() != 1 {
		t.Fatalf("CAA pinned %d times before one order", p.calls.Load())
	}
	reg, err := m.Account(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(reg.URI, "https://") {
		t.Fatalf("account URI %q", reg.URI)
	}
	want := dnsread.CAAPolicy{IssuerDomain: "pebble.letsencrypt.org", AccountURI: reg.URI, ValidationMethods: []string{"dns-01"}}
	for _, name := range []string{"app.example.test", "*.example.test"} {
		set, err := dnsread.LookupCAA(context.Background(), w.dns.Addr(), name)
		if err != nil {
			t.Fatal(err)
		}
		if chk := dnsread.CheckCAA(set, want); !chk.OK() {
			t.Fatalf("%s: CAA over DNS does not pin account %s: %+v", name, reg.URI, chk)
		}
	}
	// The exact record text, read back over DNS.
	value := `"pebble.letsencrypt.org;validationmethods=dns-01;accounturi=` + reg.URI + `"`
	if got := w.dns.Records("app.example.test.", dns.TypeCAA); len(got) != 1 || !strings.HasSuffix(got[0].String(), "0 issue "+value) {
		t.Fatalf("CAA at app.example.test: %v, want 0 issue %s", got, value)
	}
	var haveIodef, haveWild bool
	for _, rr := range w.dns.Records("example.test.", dns.TypeCAA) {
		haveIodef = haveIodef || strings.Contains(rr.String(), `iodef "mailto:security@example.test"`)
		haveWild = haveWild || strings.HasSuffix(rr.String(), "0 issuewild "+value)
	}
	if !haveIodef || !haveWild {
		t.Fatalf("apex CAA lost iodef or lacks issuewild: %v", w.dns.Records("example.test.", dns.TypeCAA))
	}
	// The public account document names the same URI and holds no key.
	pub, err := m.AccountJSON(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Body json.RawMessage `json:"body"`
		URI  string          `json:"uri"`
	}
	if err := json.Unmarshal(pub, &doc); err != nil || doc.URI != reg.URI || len(doc.Body) == 0 {
		t.Fatalf("acme-account.json %s: %v", pub, err)
	}
	if bytes.Contains(pub, []byte("PRIVATE")) || bytes.Contains(pub, []byte(`"d"`)) {
		t.Fatalf("acme-account.json carries key material: %s", pub)
	}
}

func TestRestartIssuesNothingAndChangedNamesReissue(t *testing.T) {
	w := newWorld(t)
	state := t.TempDir()
	domains := []string{"app.example.test"}
	first, err := w.manager(t, w.config(t, state)).Ensure(context.Background(), domains)
	if err != nil {
		t.Fatal(err)
	}
	orders := w.ca.Orders()

	// A new process: new Manager, same state directory.
	m2 := w.manager(t, w.config(t, state))
	again, err := m2.Ensure(context.Background(), domains)
	if err != nil {
		t.Fatal(err)
	}
	if w.ca.Orders() != orders {
		t.Fatalf("restart sent %d new orders, want 0", w.ca.Orders()-orders)
	}
	if !again.Leaf.Equal(first.Leaf) {
		t.Fatal("restart serves another certificate than the stored one")
	}
	// The stored file holds the key: owner-only.
	files, _ := filepath.Glob(filepath.Join(state, "tee-ingress", "*", "certs", "*.json"))
	if len(files) != 1 {
		t.Fatalf("stored certificate files: %v", files)
	}
	if fi, _ := os.Stat(files[0]); fi.Mode().Perm() != 0o600 {
		t.Fatalf("certificate file mode %v, want 0600", fi.Mode().Perm())
	}
	// The account was found by key, not registered anew.
	r1, _ := w.manager(t, w.config(t, state)).Account(context.Background())
	r2, _ := m2.Account(context.Background())
	if r1 == nil || r2 == nil || r1.URI != r2.URI {
		t.Fatal("account URI changed across restarts")
	}

	changed := []string{"app.example.test", "www.example.test"}
	c, err := w.manager(t, w.config(t, state)).Ensure(context.Background(), changed)
	if err != nil {
		t.Fatal(err)
	}
	if w.ca.Orders() != orders+1 {
		t.Fatalf("changed domain set sent %d orders, want 1", w.ca.Orders()-orders)
	}
	w.checkIssued(t, c, changed)
}

func TestRenewalFollowsARIWindow(t *testing.T) {
	w := newWorld(t)
	m := w.manager(t, w.config(t, t.TempDir()))
	ctx := context.Background()
	domains := []string{"app.example.test"}
	old, err := m.Ensure(ctx, domains)
	if err != nil {
		t.Fatal(err)
	}
	orders := w.ca.Orders()

	// Outside its window: kept.
	now := time.Now()
	if err := w.ca.SetRenewalInfo(old.Leaf, now.Add(30*24*time.Hour), now.Add(31*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	cur, renewed, next, err := m.RenewIfDue(ctx, domains)
	if err != nil || renewed || !cur.Leaf.Equal(old.Leaf) || w.ca.Orders() != orders {
		t.Fatalf("renewed outside the ARI window: renewed=%v err=%v", renewed, err)
	}
	if !next.After(now) {
		t.Fatalf("next check %v is not in the future", next)
	}
	d, err := m.Decide(ctx, old)
	if err != nil || d.Reason != ReasonARI {
		t.Fatalf("decision %+v, %v: want ARI", d, err)
	}

	// Window now: replaced, with replaces naming the old certificate.
	if err := w.ca.SetRenewalInfo(old.Leaf, now.Add(-time.Hour), now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	var changed []*Certificate
	m.cfg.OnChange = func(c *Certificate) { changed = append(changed, c) }
	cur, renewed, _, err = m.RenewIfDue(ctx, domains)
	if err != nil || !renewed {
		t.Fatalf("not renewed inside the ARI window: %v", err)
	}
	if cur.Leaf.Equal(old.Leaf) || w.ca.Orders() != orders+1 {
		t.Fatal("renewal did not bring a new certificate")
	}
	wantID, _ := certificate.MakeARICertID(old.Leaf)
	if got := w.ca.LastReplaces(); got != wantID {
		t.Fatalf("replaces %q, want %q", got, wantID)
	}
	if len(changed) != 1 || !changed[0].Leaf.Equal(cur.Leaf) {
		t.Fatal("OnChange not called once with the new certificate")
	}
	if m.Current(domains) != cur {
		t.Fatal("Current does not return the renewed certificate")
	}
}

// TestRenewalReplacesRefused: the operator switched the account key
// (ACME_ACCOUNT_KEY file -> kms) and kept the state. The stored certificate
// belongs to the old account, so the CA refuses a renewal order that names
// it (pebble and Let's Encrypt: unauthorized). The renewal goes ahead
// without "replaces" instead of failing until the certificate expires.
func TestRenewalReplacesRefused(t *testing.T) {
	w := newWorld(t)
	state := t.TempDir()
	domains := []string{"app.example.test"}
	old, err := w.manager(t, w.config(t, state)).Ensure(context.Background(), domains)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := w.ca.SetRenewalInfo(old.Leaf, now.Add(-time.Hour), now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	orders := w.ca.Orders()

	cfg := w.config(t, state)
	cfg.Keys = &FileKeySource{Path: filepath.Join(state, "another-account.key")}
	var logs bytes.Buffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	m := w.manager(t, cfg)
	if c, err := m.Ensure(context.Background(), domains); err != nil || !c.Leaf.Equal(old.Leaf) || w.ca.Orders() != orders {
		t.Fatalf("the stored certificate was not taken up under the new account: %v", err)
	}
	cur, renewed, _, err := m.RenewIfDue(context.Background(), domains)
	if err != nil || !renewed || cur.Leaf.Equal(old.Leaf) {
		t.Fatalf("renewal after an account change: renewed=%v err=%v", renewed, err)
	}
	w.checkIssued(t, cur, domains)
	if n := w.ca.Orders() - orders; n != 1 {
		t.Fatalf("%d orders created, want 1 (the refused one creates none)", n)
	}
	if got := w.ca.LastReplaces(); got != "" {
		t.Fatalf("the order that went through names %q, want no replaces", got)
	}
	wantID, _ := certificate.MakeARICertID(old.Leaf)
	line := ""
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, "refused the renewal order") {
			line = l
		}
	}
	if line == "" || !strings.Contains(line, "level=WARN") || !strings.Contains(line, wantID) ||
		!strings.Contains(line, "requester account did not request the certificate being replaced") {
		t.Fatalf("no warning naming the refused replaces and the CA's reason:\n%s", logs.String())
	}
}

// A rate limit on the order that names the replaced certificate is not a
// refusal of "replaces": dropping it would only lose the exemption.
func TestOrderRefusedIsNotRateLimit(t *testing.T) {
	m := &Manager{}
	m.dir.NewOrder = "https://ca.example/new-order"
	pd := func(url string) *legoacme.ProblemDetails {
		return &legoacme.ProblemDetails{Type: "urn:ietf:params:acme:error:unauthorized", HTTPStatus: 403, Method: "POST", URL: url}
	}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"new-order refused", fmt.Errorf("obtain: %w", pd(m.dir.NewOrder)), true},
		{"new-order rate limited", &legoacme.RateLimitedError{ProblemDetails: pd(m.dir.NewOrder)}, false},
		{"a challenge failed", pd("https://ca.example/chall/1"), false},
		{"finalize refused", pd("https://ca.example/finalize/1"), false},
		{"not a CA answer", errors.New("dial tcp: connection refused"), false},
	} {
		if got := m.orderRefused(tc.err); got != tc.want {
			t.Errorf("%s: orderRefused = %v, want %v", tc.name, got, tc.want)
		}
	}
	m.dir.NewOrder = "" // directory not read: nothing is a refusal
	if m.orderRefused(pd("")) {
		t.Error("a problem without a URL counted as a new-order refusal")
	}
}

func TestRenewalWithoutARI(t *testing.T) {
	w := newWorld(t)
	cfg := w.config(t, t.TempDir())
	cfg.RenewBefore = 100 * 24 * time.Hour // longer than pebble's 90-day lifetime: due at once
	m := w.manager(t, cfg)
	domains := []string{"app.example.test"}
	old, err := m.Ensure(context.Background(), domains)
	if err != nil {
		t.Fatal(err)
	}
	d, err := m.Decide(context.Background(), old)
	if err != nil || d.Reason != ReasonFixedWindow || !d.At.Equal(old.Leaf.NotAfter.Add(-cfg.RenewBefore)) {
		t.Fatalf("decision %+v, %v", d, err)
	}
	if _, renewed, _, err := m.RenewIfDue(context.Background(), domains); err != nil || !renewed {
		t.Fatalf("fixed window passed but not renewed: %v", err)
	}

	cfg.RenewBefore = 0
	m2 := w.manager(t, cfg)
	m2.now = func() time.Time { return old.Leaf.NotBefore.Add(time.Hour) }
	if err := m2.setupLocked(context.Background()); err != nil {
		t.Fatal(err)
	}
	m2.dir.RenewalInfo = "" // as if the CA had no ARI
	d, err = m2.Decide(context.Background(), old)
	life := old.Leaf.NotAfter.Sub(old.Leaf.NotBefore)
	if err != nil || d.Reason != ReasonLifetime || !d.At.Equal(old.Leaf.NotAfter.Add(-life/3)) {
		t.Fatalf("decision %+v, %v: want a third of the lifetime", d, err)
	}
}

func TestFaultsEndBoundedAndLeaveNothing(t *testing.T) {
	cases := []struct {
		name  string
		setup func(w *world)
		want  []string
	}{
		{"dns api 500", func(w *world) {
			w.cf.SetFault(func(r *http.Request) cfemu.Fault {
				if r.Method != http.MethodGet {
					return cfemu.Fault{Status: 500}
				}
				return cfemu.Fault{}
			})
		}, []string{"app.example.test", "present", "500"}},
		{"dns api hangs", func(w *world) {
			w.cf.SetFault(func(r *http.Request) cfemu.Fault { return cfemu.Fault{Hang: r.Method != http.MethodGet} })
		}, []string{"app.example.test", "present", "deadline"}},
		{"token rejected", func(w *world) {
			w.cf.SetFault(func(r *http.Request) cfemu.Fault {
				return cfemu.Fault{Status: 403, Body: `{"success":false,"errors":[{"code":9109,"message":"Invalid access token"}],"messages":[],"result":null}`}
			})
		}, []string{"app.example.test", "present", "403"}},
		{"txt never propagates", func(w *world) {
			w.dns.SetHide(func(rr dns.RR) bool { return strings.HasPrefix(rr.Header().Name, "_acme-challenge.") })
		}, []string{"app.example.test", "propagation"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			before := w.dns.All()
			m := w.manager(t, w.config(t, t.TempDir()))
			if _, err := m.Account(context.Background()); err != nil {
				t.Fatal(err)
			}
			c.setup(w)
			start := time.Now()
			_, err := m.Ensure(context.Background(), []string{"app.example.test"})
			took := time.Since(start)
			if err == nil {
				t.Fatal("issuance succeeded through a fault")
			}
			for _, s := range c.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if strings.Contains(err.Error(), cfToken) {
				t.Error("error carries the API token")
			}
			if took > 30*time.Second {
				t.Errorf("took %v", took)
			}
			w.cf.SetFault(nil)
			w.dns.SetHide(nil)
			if after := w.dns.All(); !sameRRs(before, after) {
				t.Fatalf("records left behind:\nbefore %v\nafter  %v", before, after)
			}
			if m.Current([]string{"app.example.test"}) != nil {
				t.Fatal("a failed issuance left a certificate in use")
			}
		})
	}
}

func TestRateLimitHonouredWithBackoff(t *testing.T) {
	w := newWorld(t)
	m := w.manager(t, w.config(t, t.TempDir()))
	domains := []string{"app.example.test"}
	if _, err := m.Account(context.Background()); err != nil {
		t.Fatal(err)
	}
	w.ca.RateLimitNextOrders(1, 2*time.Second)
	_, err := m.Ensure(context.Background(), domains)
	var oe *ObtainError
	if !errors.As(err, &oe) || !IsRateLimited(err) {
		t.Fatalf("error %v, want a rate-limit ObtainError", err)
	}
	if ra := oe.RetryAfter(time.Now()); ra != 2*time.Second {
		t.Fatalf("Retry-After %v, want 2s", ra)
	}
	if !strings.Contains(err.Error(), "app.example.test") {
		t.Fatalf("error %q does not name the domain", err)
	}

	// Run: the first attempt is refused, the next waits at least Retry-After.
	w.ca.RateLimitNextOrders(1, time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx, [][]string{domains}); close(done) }()
	deadline := time.Now().Add(20 * time.Second)
	var sawLimited bool
	var limitedAt, retryAt time.Time
	for m.Current(domains) == nil && time.Now().Before(deadline) {
		st := m.StatusOf(domains)
		if st.RateLimited && !sawLimited {
			sawLimited, limitedAt, retryAt = true, time.Now(), st.NextCheck
		}
		<-time.After(10 * time.Millisecond)
	}
	cancel()
	<-done
	if m.Current(domains) == nil {
		t.Fatal("never issued after the rate limit")
	}
	if !sawLimited || retryAt.Sub(limitedAt) < 900*time.Millisecond {
		t.Fatalf("rate limit not honoured: seen=%v next attempt %v after refusal", sawLimited, retryAt.Sub(limitedAt))
	}
}

func BenchmarkIssuance(b *testing.B) {
	w := newWorld(b)
	m := w.manager(b, w.config(b, b.TempDir()))
	if _, err := m.Account(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m.op.Lock()
		_, err := m.obtainLocked(context.Background(), []string{"app.example.test"}, nil)
		m.op.Unlock()
		if err != nil {
			b.Fatal(err)
		}
	}
}

// TestReadersDoNotWaitForIssuance: metrics and readiness read Current and
// StatusOf while an order is stuck on a hanging DNS API.
func TestReadersDoNotWaitForIssuance(t *testing.T) {
	w := newWorld(t)
	m := w.manager(t, w.config(t, t.TempDir()))
	if _, err := m.Account(context.Background()); err != nil {
		t.Fatal(err)
	}
	var writes atomic.Int32
	w.cf.SetFault(func(r *http.Request) cfemu.Fault {
		if r.Method == http.MethodGet {
			return cfemu.Fault{}
		}
		writes.Add(1)
		return cfemu.Fault{Hang: true}
	})
	domains := []string{"app.example.test"}
	done := make(chan error, 1)
	go func() { _, err := m.Ensure(context.Background(), domains); done <- err }()
	deadline := time.After(10 * time.Second)
	for writes.Load() == 0 {
		select {
		case <-deadline:
			t.Fatal("the order never reached the DNS API")
		case <-time.After(5 * time.Millisecond):
		}
	}
	read := make(chan struct{})
	go func() {
		_ = m.StatusOf(domains)
		_ = m.Current(domains)
		_ = m.AccountURI()
		close(read)
	}()
	select {
	case <-read:
	case err := <-done:
		t.Fatalf("issuance ended (%v) before the readers were checked", err)
	case <-time.After(time.Second):
		t.Fatal("StatusOf/Current/AccountURI blocked behind an issuance in progress")
	}
	if err := <-done; err == nil {
		t.Fatal("issuance through a hanging DNS API succeeded")
	}
}

// TestStoredAccountWithoutTheCA: a restart can name its account while the
// CA is down, but only for the key the record was made with.
func TestStoredAccountWithoutTheCA(t *testing.T) {
	w := newWorld(t)
	state := t.TempDir()
	cfg := w.config(t, state)
	if _, _, err := w.manager(t, cfg).StoredAccountJSON(context.Background()); !errors.Is(err, ErrNoStoredAccount) {
		t.Fatalf("before any account: %v, want ErrNoStoredAccount", err)
	}
	online := w.manager(t, cfg)
	want, err := online.AccountJSON(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	w.ca.Close()
	got, uri, err := w.manager(t, cfg).StoredAccountJSON(context.Background())
	if err != nil || !bytes.Equal(got, want) || uri != online.AccountURI() {
		t.Fatalf("stored account %q %q %v, want %q", got, uri, err, want)
	}
	other := cfg
	other.Keys = &FileKeySource{Path: filepath.Join(t.TempDir(), "other.key")}
	if _, _, err := w.manager(t, other).StoredAccountJSON(context.Background()); !errors.Is(err, ErrNoStoredAccount) {
		t.Fatalf("another key got the stored account: %v", err)
	}
}
