package main

import (
	"context"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/internal/acmeca"
	"github.com/tee-ingress/tee-ingress/internal/cfemu"
)

// TestDNSProviderDownWithStoredCertificate: a restart while the DNS provider
// fails serves the stored certificate and publishes evidence at once; the
// DNS failure is reported, retried, and does not stop anything.
func TestDNSProviderDownWithStoredCertificate(t *testing.T) {
	bin, _ := binaries(t)
	w := newWorld(t, acmeca.Options{})
	be := newBackend(t, "app")
	state := t.TempDir()
	env := w.env(state, map[string]string{"TARGET_ENDPOINT": be.addr, "GATEWAY_DOMAIN": "_.gw.ingress.test",
		"SET_CAA": "true", "METRICS_LISTEN": "127.0.0.1:0"})
	p1 := startIngress(t, bin, env, "--listen", "127.0.0.1:0")
	addr1 := p1.addr()
	p1.waitReady()
	first := servedLeaf(t, addr1, "app.ingress.test", w)
	if code := p1.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	orders := w.ca.Orders()

	var failed atomic.Int32
	w.cf.SetFault(func(*http.Request) cfemu.Fault {
		failed.Add(1)
		return cfemu.Fault{Status: http.StatusInternalServerError}
	})
	p := startIngress(t, bin, env, "--listen", "127.0.0.1:0")
	addr, maddr := p.addr(), p.metricsAddr()
	p.waitReady()
	if string(servedLeaf(t, addr, "app.ingress.test", w)) != string(first) {
		t.Fatal("the stored certificate is not the one served")
	}
	c := w.client(addr)
	if _, body := get(t, c, "https://app.ingress.test/"); !strings.HasPrefix(body, "app ") {
		t.Fatalf("backend: %q", body)
	}
	c.CloseIdleConnections() // tcp mode: an idle keep-alive connection would hold the drain
	verifyEvidence(t, w, addr, "app."+testZone)
	p.waitLog(regexpMust(`msg="DNS records not written; retrying`), 10*time.Second)
	code, body := readyz(t, maddr)
	if code != 200 || !strings.Contains(body, "dns: ") || !strings.Contains(body, "500") {
		t.Fatalf("/readyz while the provider fails: %d %q", code, body)
	}
	if m := scrape(t, maddr); !strings.Contains(m, `tee_ingress_step_ok{step="dns"} 0`) ||
		!strings.Contains(m, `tee_ingress_dns_provider_call_duration_seconds_count{op="list_zones",provider="cloudflare",result="error"}`) {
		t.Fatalf("metrics do not show the DNS failure:\n%s", m)
	}
	if failed.Load() == 0 || w.ca.Orders() != orders {
		t.Fatalf("provider calls %d, new orders %d", failed.Load(), w.ca.Orders()-orders)
	}
	// The provider recovers: the retry writes the records.
	w.cf.SetFault(nil)
	waitFor(t, "the DNS retry to succeed", 30*time.Second, func() bool {
		code, body := readyz(t, maddr)
		return code == 200 && body == "ready\n"
	}, p.logs)
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// TestCADownWithStoredCertificate: a restart while the CA is unreachable
// serves the stored certificate and publishes evidence with the stored
// account record (the same account URI), while the account step retries.
func TestCADownWithStoredCertificate(t *testing.T) {
	bin, _ := binaries(t)
	w := newWorld(t, acmeca.Options{})
	be := newBackend(t, "app")
	state := t.TempDir()
	env := w.env(state, map[string]string{"TARGET_ENDPOINT": be.addr})
	p1 := startIngress(t, bin, env, "--listen", "127.0.0.1:0")
	addr1 := p1.addr()
	p1.waitReady()
	before := verifyEvidence(t, w, addr1, "app."+testZone)
	if code := p1.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}

	w.ca.Close()
	p := startIngress(t, bin, env, "--listen", "127.0.0.1:0")
	addr := p.addr()
	p.waitLog(regexpMust(`msg="CA unreachable; publishing evidence with the stored account record"`), 20*time.Second)
	var after *evidence.ParsedBundle
	waitFor(t, "evidence with the stored account", 20*time.Second, func() bool {
		c := w.client(addr)
		defer c.CloseIdleConnections()
		resp, err := c.Get("https://app." + testZone + "/evidences/acme-account.json")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, p.logs)
	after = verifyEvidence(t, w, addr, "app."+testZone)
	if after.AccountURI() != before.AccountURI() {
		t.Fatalf("account %q after the restart, %q before", after.AccountURI(), before.AccountURI())
	}
	if p.exited() {
		t.Fatal("ingress exited while the CA was down")
	}
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// TestCADown: with no certificate stored and the CA unreachable, the process
// stays up, retries with backoff, and /readyz says why it is not ready.
func TestCADown(t *testing.T) {
	bin, _ := binaries(t)
	w := newWorld(t, acmeca.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	env := w.env(t.TempDir(), map[string]string{"ACME_DIRECTORY": "https://" + dead + "/dir", "METRICS_LISTEN": "127.0.0.1:0"})
	p := startIngress(t, bin, env, "--listen", "127.0.0.1:0")
	addr, maddr := p.addr(), p.metricsAddr()
	p.waitLog(regexpMust(`msg="start-up step failed; retrying" step=account attempt=2`), 20*time.Second)
	code, body := readyz(t, maddr)
	if code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "not ready\n") ||
		!strings.Contains(body, "certificate app.ingress.test: not obtained yet") ||
		!strings.Contains(body, "account: ") || !strings.Contains(body, "connection refused") {
		t.Fatalf("/readyz with the CA down: %d %q", code, body)
	}
	if hc, _ := http.Get("http://" + maddr + "/healthz"); hc == nil || hc.StatusCode != 200 {
		t.Fatal("/healthz is not 200 while retrying")
	}
	// The port is open; handshakes fail until a certificate exists.
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("the listener is not open while retrying: %v", err)
	}
	c.Close()
	if p.exited() {
		t.Fatal("ingress exited while the CA was down")
	}
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// TestFailingDomainDoesNotBlockOthers: a domain the DNS provider cannot
// write keeps failing, the other is served with its evidence, the process
// stays up.
func TestFailingDomainDoesNotBlockOthers(t *testing.T) {
	bin, _ := binaries(t)
	w := newWorld(t, acmeca.Options{})
	be := newBackend(t, "app")
	state := t.TempDir()
	env := w.env(state, map[string]string{"TARGET_ENDPOINT": be.addr, "DOMAINS": "app.elsewhere.test", "METRICS_LISTEN": "127.0.0.1:0",
		"ACME_ACCOUNT_KEY": "file"})
	p := startIngress(t, bin, env, "--listen", "127.0.0.1:0")
	addr, maddr := p.addr(), p.metricsAddr()
	p.waitLog(regexpMust(`msg="certificate attempt failed; current certificate stays in use" component=acme domain=app.elsewhere.test`), 30*time.Second)
	waitFor(t, "a certificate for app.ingress.test", 30*time.Second, func() bool {
		return strings.Contains(p.stderr.String(), `msg="serving certificate" domain=app.ingress.test`)
	}, p.logs)
	c := w.client(addr)
	if _, body := get(t, c, "https://app.ingress.test/"); !strings.HasPrefix(body, "app ") {
		t.Fatalf("the healthy domain: %q", body)
	}
	c.CloseIdleConnections() // tcp mode: an idle keep-alive connection would hold the drain
	var body string
	waitFor(t, "/readyz to name the failing domain", 10*time.Second, func() bool {
		var code int
		code, body = readyz(t, maddr)
		return code == http.StatusServiceUnavailable && strings.Contains(body, "certificate app.elsewhere.test: not obtained yet (1 failed attempts")
	}, func() string { return body })
	// The bundle is built after the certificate is served, not with it.
	p.waitLog(regexpMust(`msg="evidence bundle published"`), 20*time.Second)
	pb := verifyEvidence(t, w, addr, "app."+testZone)
	if pb.Leaf(evidence.CertFileName("app.ingress.test")) == nil || pb.Leaf(evidence.CertFileName("app.elsewhere.test")) != nil {
		t.Fatal("the bundle should hold exactly the certificate that exists")
	}
	if m := scrape(t, maddr); !strings.Contains(m, `tee_ingress_certificate_failures_total{domain="app.elsewhere.test"} 1`) {
		t.Fatalf("failure not counted:\n%s", m)
	}
	// ACME_ACCOUNT_KEY=file: the key is in the state dir, readable by its
	// owner only.
	fi, err := os.Stat(filepath.Join(state, "letsencrypt", "tee-ingress", "account-key.pem"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("account key file: %v %v", fi, err)
	}
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// TestRenewalUnderLoad: a renewal swaps the served certificate and rebuilds
// the evidence while clients keep connecting, with no failed request.
// Certificates live one day and twelve seconds and RENEW_DAYS_BEFORE=1, so
// each is due twelve seconds after issuance, long before it expires. The
// certificate is obtained by a first run: the manager looks at a certificate
// it has just obtained again only after a minute, but at a stored one at
// once.
func TestRenewalUnderLoad(t *testing.T) {
	bin, _ := binaries(t)
	w := newWorld(t, acmeca.Options{CertLifetime: 24*time.Hour + 12*time.Second})
	be := newBackend(t, "app")
	env := w.env(t.TempDir(), map[string]string{"TARGET_ENDPOINT": be.addr, "RENEW_DAYS_BEFORE": "1", "PROXY_MODE": "http", "METRICS_LISTEN": "127.0.0.1:0"})
	p1 := startIngress(t, bin, env, "--listen", "127.0.0.1:0")
	p1.waitReady()
	if code := p1.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	p := startIngress(t, bin, env, "--listen", "127.0.0.1:0")
	addr, maddr := p.addr(), p.metricsAddr()
	p.waitReady()
	leaf0, err := x509.ParseCertificate(servedLeaf(t, addr, "app.ingress.test", w))
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		mu       sync.Mutex
		serials  = map[string]int{}
		failures []string
		wg       sync.WaitGroup
	)
	for i := range 2 {
		c := w.client(addr)
		// One worker opens a connection per request (new handshakes meet
		// the new certificate), one keeps its connection.
		c.Transport.(*http.Transport).DisableKeepAlives = i == 0
		wg.Go(func() {
			defer c.CloseIdleConnections()
			for n := 0; n < 100000 && ctx.Err() == nil; n++ {
				req, _ := http.NewRequestWithContext(ctx, "GET", "https://app.ingress.test/", nil)
				resp, err := c.Do(req)
				if ctx.Err() != nil {
					return
				}
				mu.Lock()
				if err != nil {
					failures = append(failures, err.Error())
				} else {
					serials[resp.TLS.PeerCertificates[0].SerialNumber.Text(16)]++
					if resp.StatusCode != 200 {
						failures = append(failures, resp.Status)
					}
					resp.Body.Close()
				}
				mu.Unlock()
			}
		})
	}
	var renewed string
	waitFor(t, "a renewed certificate served under load", 45*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for s, n := range serials {
			if s != leaf0.SerialNumber.Text(16) && n >= 50 {
				renewed = s
			}
		}
		return renewed != ""
	}, p.logs)
	waitFor(t, "the evidence to hold the renewed certificate", 20*time.Second, func() bool {
		c := w.client(addr)
		defer c.CloseIdleConnections()
		files, err := evidence.FetchBundle(ctx, c, "https://app.ingress.test/evidences/", nil)
		if err != nil {
			return false
		}
		pb, err := evidence.ParseBundle(files)
		if err != nil || pb.Leaf(evidence.CertFile) == nil {
			return false
		}
		return pb.Leaf(evidence.CertFile).SerialNumber.Text(16) != leaf0.SerialNumber.Text(16)
	}, p.logs)
	cancel()
	wg.Wait()
	checkBundle(t, w, verifyEvidence(t, w, addr, "app."+testZone))
	mu.Lock()
	defer mu.Unlock()
	if len(failures) > 0 {
		t.Fatalf("%d failed requests during renewal, first: %s", len(failures), failures[0])
	}
	if serials[leaf0.SerialNumber.Text(16)] == 0 || len(serials) < 2 {
		t.Fatalf("requests per certificate serial: %v", serials)
	}
	t.Logf("requests per certificate serial: %v", serials)
	// Exactly one issuance in this process so far (the next is due twelve
	// seconds after it): the metric is refreshed within a second.
	var m string
	waitFor(t, "the renewal in the metrics", 10*time.Second, func() bool {
		m = scrape(t, maddr)
		return strings.Contains(m, `tee_ingress_certificate_renewals_total{domain="app.ingress.test"} 1`+"\n")
	}, func() string { return m })
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
