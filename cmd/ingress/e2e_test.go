package main

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/internal/acmeca"
)

// verifyEvidence fetches /evidences/ from addr on connections of its own
// (tcp mode recognises evidence requests at the start of a connection only:
// a keep-alive connection given to the backend stays the backend's) and
// verifies the bundle under the simulator's root and app id.
func verifyEvidence(t testing.TB, w *world, addr string, domain string) *evidence.ParsedBundle {
	t.Helper()
	c := w.client(addr)
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	files, err := evidence.FetchBundle(ctx, c, "https://"+domain+"/evidences/", nil)
	if err != nil {
		t.Fatalf("fetching evidence: %v", err)
	}
	pb, err := evidence.ParseBundle(files)
	if err != nil {
		t.Fatal(err)
	}
	checkBundle(t, w, pb)
	return pb
}

func checkBundle(t testing.TB, w *world, pb *evidence.ParsedBundle) {
	t.Helper()
	checks := evidence.VerifyBundle(pb, evidence.VerifyOptions{TrustedRootsPEM: w.sim.RootPEM(),
		AppID: hex.EncodeToString(w.sim.AppID()), ComposeHash: hex.EncodeToString(w.sim.ComposeHash())})
	if evidence.Failed(checks, false) {
		var b strings.Builder
		for _, c := range checks {
			fmt.Fprintf(&b, "%s %s %s %s\n", c.Status, c.Name, c.Detail, c.Got)
		}
		t.Fatalf("evidence does not verify:\n%s", b.String())
	}
}

// servedLeaf is the leaf the ingress presents for name.
func servedLeaf(t testing.TB, addr, name string, w *world) []byte {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: name, RootCAs: w.rootPool})
	if err != nil {
		t.Fatalf("TLS to %s as %s: %v", addr, name, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Raw
}

// TestEndToEnd runs the real binary against the stand-ins: two domains
// routed to two backends, gateway records and CAA written through the
// Cloudflare API, certificates from pebble through DNS-01, evidence fetched
// and verified, a drain on SIGTERM with a request in flight, and a restart
// in http mode that sends no new order to the CA.
func TestEndToEnd(t *testing.T) {
	bin, _ := binaries(t)
	w := newWorld(t, acmeca.Options{})
	app, api := newBackend(t, "app"), newBackend(t, "api")
	state := t.TempDir()
	env := w.env(state, map[string]string{
		"DOMAINS":         "api." + testZone,
		"ROUTING_MAP":     "app.ingress.test=" + app.addr + "\napi.ingress.test=http://" + api.addr,
		"TARGET_ENDPOINT": "",
		"GATEWAY_DOMAIN":  "_.gw.ingress.test",
		"SET_CAA":         "true",
		"METRICS_LISTEN":  "127.0.0.1:0",
		"LOG_LEVEL":       "debug",
	})
	p := startIngress(t, bin, env, "--listen", "127.0.0.1:0")
	addr, maddr := p.addr(), p.metricsAddr()
	p.waitReady()
	c := w.client(addr)

	for dom, be := range map[string]*backend{"app." + testZone: app, "api." + testZone: api} {
		resp, body := get(t, c, "https://"+dom+"/")
		// tcp mode offers no ALPN: HTTP/1.1 end to end, no X-Forwarded-*.
		if resp.StatusCode != 200 || !strings.HasPrefix(body, be.name+" host="+dom+" proto=HTTP/1.1 xfp=") || resp.ProtoMajor != 1 {
			t.Fatalf("%s in tcp mode: %d %s %q", dom, resp.StatusCode, resp.Proto, body)
		}
	}

	pb := verifyEvidence(t, w, addr, "app."+testZone)
	for _, dom := range []string{"app." + testZone, "api." + testZone} {
		leaf := pb.Leaf(evidence.CertFileName(dom))
		if leaf == nil || string(leaf.Raw) != string(servedLeaf(t, addr, dom, w)) {
			t.Fatalf("the certificate served for %s is not the bundle's", dom)
		}
	}
	disk, err := evidence.LoadBundleDir(filepath.Join(state, "evidences", ".current"))
	if err != nil {
		t.Fatal(err)
	}
	checkBundle(t, w, disk)
	if string(disk.Files[evidence.SHA256SumFile]) != string(pb.Files[evidence.SHA256SumFile]) {
		t.Fatal("the bundle on disk differs from the one served")
	}

	// The records of DESIGN.md section 5, written through the Cloudflare API.
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	for _, want := range []struct{ name, typ, value string }{
		{"app.ingress.test.", "CNAME", "_.gw.ingress.test."},
		{"_dstack-app-address.app.ingress.test.", "TXT", `"` + hex.EncodeToString(w.sim.AppID()) + ":" + port + `"`},
		{"app.ingress.test.", "CAA", `0 issue "pebble.letsencrypt.org;validationmethods=dns-01;accounturi=` + pb.AccountURI() + `"`},
		{"api.ingress.test.", "CAA", `0 issue "pebble.letsencrypt.org;validationmethods=dns-01;accounturi=` + pb.AccountURI() + `"`},
	} {
		rrs := w.dns.Records(want.name, dns.StringToType[want.typ])
		if len(rrs) != 1 || !strings.HasSuffix(rrs[0].String(), "\t"+want.value) {
			t.Fatalf("%s %s: got %v, want %s", want.name, want.typ, rrs, want.value)
		}
	}
	if rrs := w.dns.Records("_acme-challenge.app.ingress.test.", dns.TypeTXT); len(rrs) != 0 {
		t.Fatalf("challenge records left behind: %v", rrs)
	}

	var m string
	waitFor(t, "renewal state in the metrics", 10*time.Second, func() bool {
		m = scrape(t, maddr)
		return strings.Contains(m, `tee_ingress_certificate_renewals_total{domain="api.ingress.test"} 1`)
	}, func() string { return m })
	for _, want := range []string{
		`tee_ingress_ready 1`,
		`tee_ingress_certificate_expiry_timestamp_seconds{domain="app.ingress.test"} `,
		`tee_ingress_certificate_renewals_total{domain="api.ingress.test"} 1`,
		`tee_ingress_certificate_failures_total{domain="app.ingress.test"} 0`,
		`tee_ingress_acme_request_duration_seconds_count{code="201",method="POST"}`,
		`tee_ingress_dns_provider_call_duration_seconds_count{op="append_records",provider="cloudflare",result="ok"}`,
		`tee_ingress_evidence_publications_total{result="ok"}`,
		`tee_ingress_step_ok{step="dns"} 1`,
		`tee_ingress_info{cert_source="acme",challenge="dns-01",mode="tcp",simulator="true"} 1`,
		`tee_ingress_evidence_requests_total `,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	for _, dir := range []string{"to_backend", "to_client"} {
		re := regexpMust(`tee_ingress_forwarded_bytes_total\{direction="` + dir + `"\} ([0-9.e+]+)`)
		if mm := re.FindStringSubmatch(m); mm == nil || mm[1] == "0" {
			t.Errorf("forwarded bytes %s: %v, want a positive count after requests through the backend", dir, mm)
		}
	}
	if code, body := readyz(t, maddr); code != 200 || body != "ready\n" {
		t.Errorf("/readyz: %d %q", code, body)
	}
	orders := w.ca.Orders()
	if orders != 2 {
		t.Fatalf("%d orders for two domains, want 2", orders)
	}

	// SIGTERM with a request in flight: it completes, new connections are
	// refused, the exit status is 0.
	c.CloseIdleConnections()
	oneShot := w.client(addr)
	oneShot.Transport.(*http.Transport).DisableKeepAlives = true
	type result struct {
		body string
		err  error
	}
	slow := make(chan result, 1)
	go func() {
		resp, err := oneShot.Get("https://app.ingress.test/slow")
		if err != nil {
			slow <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b := make([]byte, 256)
		n, _ := resp.Body.Read(b)
		slow <- result{body: string(b[:n])}
	}()
	select {
	case <-app.slowIn:
	case <-time.After(20 * time.Second):
		t.Fatal("the slow request did not reach the backend")
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.waitLog(regexp.MustCompile(`msg=draining`), 10*time.Second)
	waitFor(t, "the listener to close", 10*time.Second, func() bool {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err != nil
	}, p.logs)
	close(app.release)
	r := <-slow
	if r.err != nil || !strings.HasPrefix(r.body, "app ") {
		t.Fatalf("in-flight request across SIGTERM: %q %v", r.body, r.err)
	}
	if code := p.wait(20 * time.Second); code != 0 || !strings.Contains(p.logs(), "msg=stopped") || strings.Contains(p.logs(), "drain deadline") {
		t.Fatalf("exit %d after SIGTERM; logs:\n%s", code, p.logs())
	}

	// Restart in http mode on the same state: the stored certificates are
	// served at once, nothing is ordered.
	env["PROXY_MODE"] = "http"
	p2 := startIngress(t, bin, env, "--listen", "127.0.0.1:0")
	addr2 := p2.addr()
	p2.waitReady()
	c2 := w.client(addr2)
	resp, body := get(t, c2, "https://app.ingress.test/")
	if resp.ProtoMajor != 2 || !strings.HasPrefix(body, "app host=app.ingress.test proto=HTTP/1.1 xfp=https") {
		t.Fatalf("http mode: %s %q", resp.Proto, body)
	}
	if n := w.ca.Orders(); n != orders {
		t.Fatalf("restart sent %d new orders to the CA, want 0", n-orders)
	}
	if !strings.Contains(p2.logs(), `msg="using stored certificate"`) {
		t.Fatal("restart did not log the stored certificate")
	}
	c2.CloseIdleConnections()
	pb2 := verifyEvidence(t, w, addr2, "app."+testZone)
	if len(pb2.History) != 2 {
		t.Fatalf("history after restart holds %d certificates, want the same 2", len(pb2.History))
	}
	if code := p2.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}

	// The state volume is lost: the KMS-derived account key finds the same
	// ACME account, so the CAA pin stays valid.
	state3 := t.TempDir()
	env3 := w.env(state3, nil)
	env3["TARGET_ENDPOINT"] = app.addr
	p3 := startIngress(t, bin, env3, "--listen", "127.0.0.1:0")
	addr3 := p3.addr()
	p3.waitReady()
	if pb3 := verifyEvidence(t, w, addr3, "app."+testZone); pb3.AccountURI() != pb.AccountURI() {
		t.Fatalf("account after losing the state: %s, want the KMS-derived %s", pb3.AccountURI(), pb.AccountURI())
	}
	if code := p3.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, logs := range []string{p.logs(), p2.logs(), p3.logs()} {
		if strings.Contains(logs, testToken) || strings.Contains(logs, "PRIVATE KEY") {
			t.Fatal("a secret reached the logs")
		}
	}
	if !strings.Contains(p.logs(), "level=DEBUG") {
		t.Fatal("LOG_LEVEL=debug logged no debug line (the secret check above needs them)")
	}
}
