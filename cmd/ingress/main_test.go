package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// selfSigned writes a self-signed certificate for names and returns the files
// and a pool trusting it.
func selfSigned(t *testing.T, names ...string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	leaf, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(leaf)
	return certFile, keyFile, pool
}

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestBadInput(t *testing.T) {
	cert, key, _ := selfSigned(t, "app.test")
	static := []string{"--cert-source", "static", "--cert", cert, "--key", key}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, nil, `--cert-source "acme" is not available in this build yet`},
		{[]string{"--cert-source", "files"}, nil, `--cert-source "files": want static`},
		{[]string{"--cert-source", "static"}, nil, "--cert-source static needs --cert and --key"},
		{static, nil, "no backend: set --target (TARGET_ENDPOINT) or --routing-map (ROUTING_MAP)"},
		{static, map[string]string{"TARGET_ENDPOINT": "ftp://app:21"}, `TARGET_ENDPOINT: backend "ftp://app:21": unknown scheme "ftp"`},
		{static, map[string]string{"TARGET_ENDPOINT": "app:1", "PORT": "http"}, `PORT "http": want a port number from 1 to 65535`},
		{append(static, "--target", "app:1", "--listen", "443"), nil, `--listen "443": want an address like :443`},
		{static, map[string]string{"ROUTING_MAP": "a.test=a:1\nbad"}, `ROUTING_MAP: routing map line 2: entry "bad" has no '='`},
		{static, map[string]string{"TARGET_ENDPOINT": "app:1", "PROXY_MODE": "l7"}, `PROXY_MODE "l7": want tcp or http`},
		{static, map[string]string{"TARGET_ENDPOINT": "app:1", "MAXCONN": "0"}, `MAXCONN "0": want a whole number`},
		{static, map[string]string{"TARGET_ENDPOINT": "app:1", "TIMEOUT_CLIENT": "86400"}, `TIMEOUT_CLIENT "86400": want a positive duration with a unit`},
		{static, map[string]string{"TARGET_ENDPOINT": "app:1", "LOG_FORMAT": "xml"}, `LOG_FORMAT "xml": want text or json`},
		{static, map[string]string{"TARGET_ENDPOINT": "app:1", "PROXY_PROTOCOL": "yes"}, `PROXY_PROTOCOL "yes": want true or false`},
		{static, map[string]string{"TARGET_ENDPOINT": "app:1", "PROXY_MODE": "http", "PROXY_PROTOCOL": "true"}, "ProxyProtocol needs tcp mode"},
		{static, map[string]string{"TARGET_ENDPOINT": "app:1", "ALPN": "h2,,x"}, `ALPN "h2,,x": want a comma-separated list`},
		{[]string{"--cert-source", "static", "--cert", cert, "--key", cert, "--target", "a:1"}, nil, "loading --cert"},
		{append(static, "--target", "app:1", "--nope"), nil, "flag provided but not defined: -nope"},
		// The flag wins over the variable.
		{append(static, "--target", "app:1", "--mode", "bogus"), map[string]string{"PROXY_MODE": "http"}, `--mode "bogus"`},
	} {
		var stderr bytes.Buffer
		code := run(context.Background(), tc.args, env(tc.env), &stderr)
		first := strings.SplitN(stderr.String(), "\n", 2)[0]
		if code != 2 || !strings.HasPrefix(first, "ingress: error: ") || !strings.Contains(first, tc.want) {
			t.Errorf("args %v env %v: exit %d, stderr %q; want 2 and %q", tc.args, tc.env, code, stderr.String(), tc.want)
		}
	}
	var out bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, env(nil), &out); code != 0 || !strings.Contains(out.String(), "Examples:") {
		t.Errorf("--help: %d %q", code, out.String())
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var listenRe = regexp.MustCompile(`msg=listening addr=(\S+)`)

func waitListening(t *testing.T, logs interface{ String() string }) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		if m := listenRe.FindStringSubmatch(logs.String()); m != nil {
			return m[1]
		}
		<-tick.C
	}
	t.Fatalf("ingress did not start listening; logs:\n%s", logs.String())
	return ""
}

func client(pool *x509.CertPool, addr string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
}

func TestRunStaticEnvAndDrain(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "app "+r.Header.Get("X-Forwarded-Proto"))
	}))
	defer be.Close()
	cert, key, pool := selfSigned(t, "app.test")
	ctx, cancel := context.WithCancel(context.Background())
	logs := &lockedBuffer{}
	done := make(chan int, 1)
	t.Cleanup(func() {
		cancel() // also when the test failed half-way: run must not outlive it
		select {
		case <-done:
		case <-time.After(20 * time.Second):
		}
	})
	go func() {
		done <- run(ctx, []string{"--cert-source", "static", "--cert", cert, "--key", key, "--listen", "127.0.0.1:0"}, env(map[string]string{
			"TARGET_ENDPOINT": be.URL, "PROXY_MODE": "http", "MAXCONN": "10", "TIMEOUT_SERVER": "5s",
		}), logs)
	}()
	addr := waitListening(t, logs)
	hc := client(pool, addr)
	resp, err := hc.Get("https://app.test/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	hc.CloseIdleConnections()
	if string(body) != "app https" || resp.ProtoMajor != 2 {
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

// The real binary: built, run, used, stopped with SIGTERM.
func TestBinarySIGTERM(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "ingress")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
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
	cert, key, pool := selfSigned(t, "app.test")
	cmd := exec.Command(bin, "--cert-source", "static", "--cert", cert, "--key", key, "--listen", "127.0.0.1:0", "--target", "tcp://"+be.Addr().String(), "--drain-timeout", "5s")
	logs := &lockedBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	}()
	addr := waitListening(t, logs)
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "app.test"})
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "echo")
	buf := make([]byte, 4)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "echo" {
		t.Fatalf("echo through the binary: %q %v", buf, err)
	}
	// SIGTERM with the connection open: the binary drains; closing the
	// connection lets it exit 0 before the drain deadline.
	cmd.Process.Signal(syscall.SIGTERM)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), "msg=draining") && time.Now().Before(deadline); {
		<-tick.C
	}
	c.Close()
	select {
	case <-exited:
		if err := waitErr; err != nil || !strings.Contains(logs.String(), "msg=stopped") || strings.Contains(logs.String(), "drain deadline") {
			t.Fatalf("exit: %v; logs:\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("binary did not exit after SIGTERM; logs:\n%s", logs.String())
	}
}
