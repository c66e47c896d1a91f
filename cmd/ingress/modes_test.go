package main

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"github.com/tee-ingress/tee-ingress/internal/syncbuf"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/internal/acmeca"
	"github.com/tee-ingress/tee-ingress/internal/agentsim"
	"github.com/tee-ingress/tee-ingress/internal/dnsserver"
)

// newSim serves a guest-agent simulator on a unix socket and returns it with
// its socket and a file holding its root.
func newSim(t testing.TB) (sim *agentsim.Simulator, sock, rootFile string) {
	return newSimWith(t, agentsim.Config{})
}

// newSimWith is newSim for a simulator configured by cfg.
func newSimWith(t testing.TB, cfg agentsim.Config) (sim *agentsim.Simulator, sock, rootFile string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "ings-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if sim, err = agentsim.New(cfg); err != nil {
		t.Fatal(err)
	}
	sock, rootFile = filepath.Join(dir, "dstack.sock"), filepath.Join(dir, "root.pem")
	if err := sim.Serve(sock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	os.WriteFile(rootFile, sim.RootPEM(), 0o644)
	return sim, sock, rootFile
}

// TestSelfSigned: CERT_SOURCE=self-signed generates its certificate at start,
// and verifycli tls, pinning it, verifies /attestation under the simulator's
// root (and fails under another root).
func TestSelfSigned(t *testing.T) {
	for _, mode := range []string{"tcp", "http"} {
		t.Run(mode, func(t *testing.T) { testSelfSigned(t, mode) })
	}
}

func testSelfSigned(t *testing.T, mode string) {
	bin, verifycli := binaries(t)
	_, sock, root := newSim(t)
	_, _, otherRoot := newSim(t)
	be := newBackend(t, "app")
	p := startIngress(t, bin, map[string]string{"CERT_SOURCE": "self-signed", "TARGET_ENDPOINT": be.addr, "PROXY_MODE": mode,
		"DSTACK_SIMULATOR_ENDPOINT": sock, "METRICS_LISTEN": "127.0.0.1:0"}, "--listen", "127.0.0.1:0")
	addr, maddr := p.addr(), p.metricsAddr()
	p.waitReady()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, verifycli, "tls", "https://"+addr, "--tdx-root", root).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "result: PASS") {
		t.Fatalf("verifycli tls: %v\n%s", err, out)
	}
	out, err = exec.CommandContext(ctx, verifycli, "tls", "https://"+addr, "--tdx-root", otherRoot).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("verifycli tls under another TEE's root: %v (want exit 1)\n%s", err, out)
	}

	// Everything but /attestation reaches the backend through the same port:
	// over h2 with forwarding headers in http mode, as a plain stream in tcp
	// mode (which offers no ALPN, so the client speaks HTTP/1.1).
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}}
	defer c.CloseIdleConnections()
	resp, body := get(t, c, "https://"+addr+"/hello")
	switch {
	case mode == "http" && (resp.ProtoMajor != 2 || !strings.HasPrefix(body, "app host="+addr+" proto=HTTP/1.1 xfp=https")),
		mode == "tcp" && (resp.ProtoMajor != 1 || !strings.HasPrefix(body, "app host="+addr+" proto=HTTP/1.1")):
		t.Fatalf("%s mode, through the self-signed front: %s %q", mode, resp.Proto, body)
	}
	if m := scrape(t, maddr); !strings.Contains(m, `tee_ingress_info{cert_source="self-signed",challenge="",mode="`+mode+`",simulator="true"} 1`) ||
		!strings.Contains(m, `tee_ingress_certificate_expiry_timestamp_seconds{domain="tee-ingress.invalid"}`) {
		t.Fatalf("metrics:\n%s", m)
	}
	c.CloseIdleConnections()
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// TestSelfSignedRATLS: SELF_SIGNED_FORMAT=ra-tls serves dstack's RA-TLS
// form: verifycli tls verifies it from the handshake, and /attestation,
// which it still serves.
func TestSelfSignedRATLS(t *testing.T) {
	bin, verifycli := binaries(t)
	sim, sock, root := newSim(t)
	be := newBackend(t, "app")
	p := startIngress(t, bin, map[string]string{"CERT_SOURCE": "self-signed", "SELF_SIGNED_FORMAT": "ra-tls", "TARGET_ENDPOINT": be.addr,
		"DSTACK_SIMULATOR_ENDPOINT": sock, "PROXY_MODE": "http"}, "--listen", "127.0.0.1:0")
	addr := p.addr()
	p.waitReady()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	leaf := c.ConnectionState().PeerCertificates[0]
	c.Close()
	if !evidence.IsRATLS(leaf) {
		t.Fatal("the served certificate has no RA-TLS extension")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, verifycli, "tls", "https://"+addr, "--tdx-root", root, "--app-id", hex.EncodeToString(sim.AppID())).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "result: PASS") || !strings.Contains(string(out), "PASS  ratls.extension") ||
		!strings.Contains(string(out), "PASS  ratls.quote.report_data") || !strings.Contains(string(out), "PASS  attestation.fingerprint") {
		t.Fatalf("verifycli tls on the RA-TLS form: %v\n%s", err, out)
	}
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// TestSelfSignedAgentGone: in self-signed mode every attestation needs the
// guest agent, so /readyz says not ready, naming it, once it stops
// answering; the process keeps serving.
func TestSelfSignedAgentGone(t *testing.T) {
	bin, _ := binaries(t)
	sim, sock, _ := newSim(t)
	be := newBackend(t, "app")
	p := startIngress(t, bin, map[string]string{"CERT_SOURCE": "self-signed", "TARGET_ENDPOINT": be.addr,
		"DSTACK_SIMULATOR_ENDPOINT": sock, "METRICS_LISTEN": "127.0.0.1:0"}, "--listen", "127.0.0.1:0")
	maddr := p.metricsAddr()
	p.waitReady()
	if code, body := readyz(t, maddr); code != http.StatusOK {
		t.Fatalf("with the agent: %d %q", code, body)
	}
	sim.Close()
	code, body := readyz(t, maddr)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "agent: the dstack guest agent at "+sock+" does not answer") {
		t.Fatalf("agent gone: %d %q", code, body)
	}
	if p.exited() {
		t.Fatal("the process ended")
	}
}

// freePort returns a loopback port that was free a moment ago (pebble needs
// the port it validates tls-alpn-01 on before the ingress starts).
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestTLSALPN01: the certificate is validated by pebble dialling the listen
// port with acme-tls/1, answered in-process; the routing TXT carries the
// instance id and CAA allows tls-alpn-01.
func TestTLSALPN01(t *testing.T) {
	bin, _ := binaries(t)
	port := freePort(t)
	w := newWorld(t, acmeca.Options{TLSPort: port})
	// The gateway's address: app.ingress.test is a CNAME to it once the
	// ingress wrote its records.
	w.dns.Add(dnsserver.MustRR("_.gw.ingress.test. 60 IN A 127.0.0.1"))
	be := newBackend(t, "app")
	state := t.TempDir()
	env := w.env(state, map[string]string{"CHALLENGE_TYPE": "tls-alpn-01", "TARGET_ENDPOINT": be.addr,
		"GATEWAY_DOMAIN": "_.gw.ingress.test", "SET_CAA": "true", "METRICS_LISTEN": "127.0.0.1:0"})
	p := startIngress(t, bin, env, "--listen", "127.0.0.1:"+strconv.Itoa(port))
	addr, maddr := p.addr(), p.metricsAddr()
	p.waitReady()
	c := w.client(addr)
	if _, body := get(t, c, "https://app.ingress.test/"); !strings.HasPrefix(body, "app ") {
		t.Fatalf("backend through tls-alpn-01 certificate: %q", body)
	}
	c.CloseIdleConnections()
	pb := verifyEvidence(t, w, addr, "app."+testZone)
	txt := w.dns.Records("_dstack-app-address.app.ingress.test.", dns.TypeTXT)
	wantTXT := `"` + hex.EncodeToString(w.sim.InstanceID()) + ":" + strconv.Itoa(port) + `"`
	if len(txt) != 1 || !strings.HasSuffix(txt[0].String(), wantTXT) {
		t.Fatalf("routing TXT %v, want the instance id: %s", txt, wantTXT)
	}
	caa := w.dns.Records("app.ingress.test.", dns.TypeCAA)
	if len(caa) != 1 || !strings.Contains(caa[0].String(), "validationmethods=tls-alpn-01;accounturi="+pb.AccountURI()) {
		t.Fatalf("CAA %v", caa)
	}
	if m := scrape(t, maddr); strings.Contains(m, "tee_ingress_tls_alpn_challenges_total 0") || !strings.Contains(m, "tee_ingress_tls_alpn_challenges_total") {
		t.Fatalf("no tls-alpn-01 handshake counted:\n%s", m)
	}
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// TestStaticInProcess runs the static mode through run() (as the benchmark
// script does with the binary): flags and environment, http mode, drain.
func TestStaticInProcess(t *testing.T) {
	be := newBackend(t, "app")
	cert, key, pool := selfSignedFiles(t, "app.test")
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncbuf.Buffer{}
	done := make(chan int, 1)
	t.Cleanup(func() {
		cancel() // also when the test failed half-way: run must not outlive it
		select {
		case <-done:
		case <-time.After(20 * time.Second):
		}
	})
	go func() {
		done <- run(ctx, []string{"--cert-source", "static", "--cert", cert, "--key", key, "--listen", "127.0.0.1:0"}, lookupMap(map[string]string{
			"TARGET_ENDPOINT": "http://" + be.addr, "PROXY_MODE": "http", "MAXCONN": "10", "TIMEOUT_SERVER": "5s",
		}), io.Discard, logs, nil)
	}()
	var addr string
	waitFor(t, "listening", 20*time.Second, func() bool {
		m := listenRe.FindStringSubmatch(logs.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	}, logs.String)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
	resp, body := get(t, hc, "https://app.test/")
	hc.CloseIdleConnections()
	if !strings.HasPrefix(body, "app host=app.test proto=HTTP/1.1 xfp=https") || resp.ProtoMajor != 2 {
		t.Fatalf("through ingress (http mode from PROXY_MODE): %s %q", resp.Proto, body)
	}
	cancel() // what SIGTERM does in main
	select {
	case code := <-done:
		done <- code // for the cleanup
		if code != 0 || !strings.Contains(logs.String(), "msg=stopped") {
			t.Fatalf("exit %d; logs:\n%s", code, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after its context was cancelled")
	}
}

// TestStaticBinary: the flags the benchmark script uses, tcp mode with ALPN,
// an open connection across SIGTERM.
func TestStaticBinary(t *testing.T) {
	bin, _ := binaries(t)
	be, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	go func() {
		for {
			c, err := be.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	cert, key, pool := selfSignedFiles(t, "app.test")
	p := startIngress(t, bin, nil, "--cert-source", "static", "--cert", cert, "--key", key, "--listen", "127.0.0.1:0",
		"--target", be.Addr().String(), "--alpn", "h2,http/1.1", "--mode", "tcp", "--drain-timeout", "5s")
	addr := p.addr()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "app.test", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	if c.ConnectionState().NegotiatedProtocol != "h2" {
		t.Fatalf("ALPN: %q", c.ConnectionState().NegotiatedProtocol)
	}
	io.WriteString(c, "echo")
	buf := make([]byte, 4)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "echo" {
		t.Fatalf("echo through the binary: %q %v", buf, err)
	}
	// SIGTERM with the connection open: the binary drains; closing the
	// connection lets it exit 0 before the drain deadline.
	p.cmd.Process.Signal(os.Interrupt)
	p.waitLog(regexpMust(`msg=draining`), 10*time.Second)
	c.Close()
	if code := p.wait(20 * time.Second); code != 0 || !strings.Contains(p.logs(), "msg=stopped") || strings.Contains(p.logs(), "drain deadline") {
		t.Fatalf("exit %d; logs:\n%s", code, p.logs())
	}
}
