package proxy

import (
	"bytes"
	"context"
	"fmt"
	"github.com/tee-ingress/tee-ingress/internal/syncbuf"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// External clients: curl and openssl are installed by .ci/run; a missing one
// fails the test rather than hiding it.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is needed for this test (apt-get install %s): %v", name, name, err)
	}
	return p
}

func runTool(t *testing.T, stdin string, name string, args ...string) (stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, lookTool(t, name), args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String(), errb.String()
}

func writeCA(t *testing.T, f *fixture) string {
	p := filepath.Join(t.TempDir(), "ca.pem")
	mustf(t, os.WriteFile(p, f.pki.caPEM, 0o644), "writing CA")
	return p
}

func curl(t *testing.T, ca, addr, host, path string, extra ...string) (body, version string) {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	args := append([]string{"-sS", "--fail", "--max-time", "20", "--cacert", ca,
		"--resolve", fmt.Sprintf("%s:%s:127.0.0.1", host, port),
		"-w", "\n%{http_version}", fmt.Sprintf("https://%s:%s%s", host, port, path)}, extra...)
	out, _ := runTool(t, "", "curl", args...)
	i := strings.LastIndex(out, "\n")
	return out[:i], out[i+1:]
}

func TestCurl(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	ca := writeCA(t, f)
	be := startH2CBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "backend %s %s %s xff=%s", r.Proto, hostOnly(r.Host), r.URL.Path, r.Header.Get("X-Forwarded-For"))
	}))
	beAddr := strings.TrimPrefix(be.URL, "http://")
	_, tcpAddr := startProxy(t, Config{Certs: f.store, Default: Target{Addr: beAddr}, Evidence: evidenceHandler(), ALPN: []string{"h2", "http/1.1"}})
	_, httpAddr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: Target{Scheme: SchemeHTTP, Addr: beAddr}, Evidence: evidenceHandler()})

	for _, tc := range []struct {
		name, addr, host, path, flag string
		wantBody, wantVersion        string
	}{
		{"tcp h1 backend", tcpAddr, "app.test", "/x", "--http1.1", "backend HTTP/1.1 app.test /x xff=", "1.1"},
		{"tcp h2 passthrough", tcpAddr, "app.test", "/x", "--http2", "backend HTTP/2.0 app.test /x xff=", "2"},
		{"tcp h1 evidence", tcpAddr, "app.test", "/evidences/quote.json", "--http1.1", `{"quote":"00"}`, "1.1"},
		{"tcp wildcard", tcpAddr, "a.wild.test", "/w", "--http1.1", "backend HTTP/1.1 a.wild.test /w xff=", "1.1"},
		{"http h1", httpAddr, "app.test", "/y", "--http1.1", "backend HTTP/1.1 app.test /y xff=127.0.0.1", "1.1"},
		{"http h2", httpAddr, "app.test", "/y", "--http2", "backend HTTP/1.1 app.test /y xff=127.0.0.1", "2"},
		{"http h1 evidence", httpAddr, "app.test", "/evidences/quote.json", "--http1.1", `{"quote":"00"}`, "1.1"},
		{"http h2 evidence", httpAddr, "app.test", "/evidences/quote.json", "--http2", `{"quote":"00"}`, "2"},
		{"http wildcard h2", httpAddr, "b.wild.test", "/w", "--http2", "backend HTTP/1.1 b.wild.test /w xff=127.0.0.1", "2"},
	} {
		body, version := curl(t, ca, tc.addr, tc.host, tc.path, tc.flag)
		if body != tc.wantBody || version != tc.wantVersion {
			t.Errorf("%s: curl got %q over HTTP/%s, want %q over HTTP/%s", tc.name, body, version, tc.wantBody, tc.wantVersion)
		}
	}
	// HEAD through tcp-mode evidence.
	out, _ := runTool(t, "", "curl", "-sS", "--fail", "--max-time", "20", "--http1.1", "-I", "--cacert", ca,
		"--resolve", "app.test:"+portOf(tcpAddr)+":127.0.0.1", "https://app.test:"+portOf(tcpAddr)+"/evidences/quote.json")
	if !strings.HasPrefix(out, "HTTP/1.1 200") || !strings.Contains(strings.ToLower(out), "content-length: 14") {
		t.Errorf("curl -I evidence: %q", out)
	}
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func TestOpenSSLClient(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	ca := writeCA(t, f)
	be := startTCPBackend(t, bannerHandler)
	app := startHTTPBackend(t, "app")
	_, tcpAddr := startProxy(t, Config{Certs: f.store, Default: be.target(), Evidence: evidenceHandler(), ALPN: []string{"imap"}})
	_, httpAddr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: app.target(), Evidence: evidenceHandler()})
	for _, tc := range []struct {
		name, addr, sni, alpn, stdin string
		wantErr, wantOut             []string
	}{
		// Server-speaks-first protocol through tcp mode: the banner arrives
		// although s_client sends nothing.
		{"banner", tcpAddr, "app.test", "imap", "",
			nil, []string{"Verify return code: 0 (ok)", "subject=CN = app.test", "ALPN protocol: imap", "220 banner ready"}},
		{"wildcard SNI", tcpAddr, "deep.wild.test", "", "",
			nil, []string{"Verify return code: 0 (ok)", "subject=CN = *.wild.test", "No ALPN negotiated", "220 banner ready"}},
		{"http mode h2 ALPN", httpAddr, "other.test", "h2,http/1.1", "",
			nil, []string{"Verify return code: 0 (ok)", "subject=CN = other.test", "ALPN protocol: h2", "New, TLSv1.3"}},
		{"http mode evidence over http/1.1", httpAddr, "app.test", "http/1.1", "GET /evidences/quote.json HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
			nil, []string{"ALPN protocol: http/1.1", "HTTP/1.1 200 OK", `{"quote":"00"}`}},
	} {
		args := []string{"s_client", "-connect", tc.addr, "-servername", tc.sni, "-CAfile", ca, "-verify_return_error"}
		if tc.alpn != "" {
			args = append(args, "-alpn", tc.alpn)
		}
		// Keep the connection up after stdin's EOF until everything wanted has
		// arrived.
		args = append(args, "-ign_eof")
		stdout, stderr := runOpenSSL(t, tc.stdin, args, tc.wantOut)
		for _, w := range tc.wantErr {
			if !strings.Contains(stderr, w) {
				t.Errorf("%s: s_client summary lacks %q:\n%s", tc.name, w, stderr)
			}
		}
		for _, w := range tc.wantOut {
			if !strings.Contains(stdout, w) {
				t.Errorf("%s: s_client output lacks %q:\n%s", tc.name, w, stdout)
			}
		}
	}
}

// runOpenSSL runs s_client until it exits or, when waiting for output, until
// every wanted string has appeared (then it is stopped).
func runOpenSSL(t *testing.T, stdin string, args []string, want []string) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, lookTool(t, "openssl"), args...)
	cmd.Stdin = strings.NewReader(stdin)
	out := &syncbuf.Buffer{}
	errb := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = out, errb
	mustf(t, cmd.Start(), "starting openssl")
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-exited:
			return out.String(), errb.String()
		case <-tick.C:
			if len(want) == 0 {
				continue
			}
			all := true
			for _, w := range want {
				all = all && strings.Contains(out.String(), w)
			}
			if all {
				cmd.Process.Kill()
				<-exited
				return out.String(), errb.String()
			}
		case <-ctx.Done():
			<-exited
			t.Fatalf("openssl %v timed out; stdout %q stderr %q", args, out.String(), errb.String())
		}
	}
}

// TestH2Load: nghttp2's h2load, many streams at once on a few connections,
// on the HTTP/2 fast path and on net/http: every request answered 2xx, the
// fast path's through the fast path.
func TestH2Load(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	app := startHTTPBackend(t, "app")
	for _, plain := range []bool{false, true} {
		s, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: app.target(), PlainHTTP2: plain})
		out, _ := runTool(t, "", "h2load", "-n", "3000", "-c", "4", "-m", "10", "--connect-to", addr,
			"https://app.test:"+portOf(addr)+"/load")
		if !strings.Contains(out, "3000 total, 3000 started, 3000 done, 3000 succeeded, 0 failed, 0 errored") ||
			!strings.Contains(out, "status codes: 3000 2xx") {
			t.Errorf("plain=%v: h2load:\n%s", plain, out)
		}
		if fast := s.stats.h2Streams.Load(); (fast == 3000) == (plain || *plainCore) {
			t.Errorf("plain=%v: the fast path served %d of the 3000 streams", plain, fast)
		}
	}
}
