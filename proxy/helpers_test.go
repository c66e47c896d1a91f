package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testPKI is a throwaway CA issuing ECDSA P-256 leaf certificates.
type testPKI struct {
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	pool   *x509.CertPool
	caPEM  []byte
	serial atomic.Int64
}

func newPKI(t testing.TB) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tee-ingress test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &testPKI{caCert: ca, caKey: key, pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	p.serial.Store(100)
	return p
}

// issue returns a leaf for names (the first is the CommonName) with Leaf set.
func (p *testPKI) issue(t testing.TB, names ...string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial.Add(1)),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// writeFiles writes cert and key PEM files and returns their paths.
func writeCertFiles(t testing.TB, dir string, c *tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	var chain bytes.Buffer
	for _, der := range c.Certificate {
		pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	if err := os.WriteFile(certFile, chain.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// fixture is a PKI plus a CertStore serving "app.test" (primary), "other.test"
// and "*.wild.test", each with its own certificate.
type fixture struct {
	pki   *testPKI
	store *CertStore
	certs map[string]*tls.Certificate
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	p := newPKI(t)
	f := &fixture{pki: p, store: &CertStore{}, certs: map[string]*tls.Certificate{
		"app.test":    p.issue(t, "app.test"),
		"other.test":  p.issue(t, "other.test"),
		"*.wild.test": p.issue(t, "*.wild.test"),
	}}
	if err := f.store.Set("app.test", f.certs); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) clientTLS(sni string, alpn ...string) *tls.Config {
	return &tls.Config{RootCAs: f.pki.pool, ServerName: sni, NextProtos: alpn}
}

// startProxy runs a Server on 127.0.0.1 and shuts it down at cleanup,
// checking that Serve returned ErrServerClosed.
// plainCore runs every proxy of the suite on the standard-library core
// alone (Config.PlainCore); TestPlainCoreSuite runs the suite again so.
var plainCore = flag.Bool("plain-core", false, "run every proxy on the plain core (Config.PlainCore)")

// withCore applies -plain-core to cfg.
func withCore(cfg Config) Config {
	cfg.PlainCore = cfg.PlainCore || *plainCore
	return cfg
}

// skipOnPlainCore skips a test of the fast path itself.
func skipOnPlainCore(t testing.TB, what string) {
	t.Helper()
	if *plainCore {
		t.Skipf("a fast-path test, not run on the plain core: %s", what)
	}
}

// skipH2OnPlainCore skips a test of the HTTP/2 fast path (its tests, and
// its side of the attack and h2spec runs); TestPlainCoreSuite counts these
// apart from the other fast-path skips.
func skipH2OnPlainCore(t testing.TB) {
	t.Helper()
	if *plainCore {
		t.Skip("an HTTP/2 fast-path test: the plain core has no HTTP/2 fast path")
	}
}

func startProxy(t testing.TB, cfg Config) (*Server, string) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	s, err := New(withCore(cfg))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return s, ln.Addr().String()
}

// testLogger logs through t at debug level when -v is given.
func testLogger(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return nil
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// tcpBackend accepts connections on 127.0.0.1 and runs handle for each; cleanup
// closes everything and waits for the handlers.
type tcpBackend struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]bool
	addr  string
	count atomic.Int64
}

func startTCPBackend(t testing.TB, handle func(net.Conn)) *tcpBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &tcpBackend{ln: ln, conns: map[net.Conn]bool{}, addr: ln.Addr().String()}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.count.Add(1)
			b.mu.Lock()
			b.conns[c] = true
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer func() {
					c.Close()
					b.mu.Lock()
					delete(b.conns, c)
					b.mu.Unlock()
				}()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		for c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

func (b *tcpBackend) target() Target { return Target{Addr: b.addr} }

// echoHandler echoes until EOF, then writes "bye" and closes: it shows that a
// client's half-close reached the backend and the backend's reply still came
// back.
func echoHandler(c net.Conn) {
	io.Copy(c, c)
	c.Write([]byte("bye"))
}

// bannerHandler speaks first, then echoes.
func bannerHandler(c net.Conn) {
	c.Write([]byte("220 banner ready\r\n"))
	io.Copy(c, c)
}

// httpBackend is a real HTTP/1.1 server on 127.0.0.1 answering with a JSON
// description of the request it got; it counts its connections.
type httpBackend struct {
	*httptest.Server
	conns atomic.Int64
}

type seenRequest struct {
	Backend string      `json:"backend"`
	Method  string      `json:"method"`
	Host    string      `json:"host"`
	Path    string      `json:"path"`
	Proto   string      `json:"proto"`
	Header  http.Header `json:"header"`
}

func startHTTPBackend(t testing.TB, name string) *httpBackend {
	t.Helper()
	b := &httpBackend{}
	b.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(seenRequest{Backend: name, Method: r.Method, Host: r.Host, Path: r.URL.Path, Proto: r.Proto, Header: r.Header})
	}))
	b.Server.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			b.conns.Add(1)
		}
	}
	b.Start()
	t.Cleanup(b.Close)
	return b
}

func (b *httpBackend) target() Target {
	return Target{Scheme: SchemeHTTP, Addr: strings.TrimPrefix(b.URL, "http://")}
}

// evidenceHandler serves a tiny fixed bundle like the evidence package does.
func evidenceHandler() http.Handler {
	files := map[string]string{
		"quote.json":    `{"quote":"00"}`,
		"sha256sum.txt": strings.Repeat("0", 64) + "  cert.pem\n",
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead { // as evidence.Handler
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed: only GET and HEAD", http.StatusMethodNotAllowed)
			return
		}
		name := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/evidences"), "/")
		if name == "" {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			io.WriteString(w, "evidence index: quote.json sha256sum.txt\n")
			return
		}
		body, ok := files[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("ETag", `"e1"`)
		http.ServeContent(w, r, name, time.Time{}, strings.NewReader(body))
	})
}

// httpClient returns a client that sends every request to addr whatever the
// URL's host, verifying the proxy's certificate for that host.
func (f *fixture) httpClient(addr string, h2 bool) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: f.pki.pool},
		ForceAttemptHTTP2: h2,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	if !h2 {
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	}
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// getJSON fetches url and decodes the backend's description of the request.
func getJSON(t testing.TB, c *http.Client, url string, hdr http.Header) (*http.Response, seenRequest) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v[0]
			continue
		}
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var seen seenRequest
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(body, &seen); err != nil {
			t.Fatalf("GET %s: body %q: %v", url, body, err)
		}
	}
	return resp, seen
}

// checkGoroutines records the goroutine count and, at cleanup (registered
// first, so it runs last), waits up to 10 s for it to come back down.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		deadline := time.Now().Add(10 * time.Second)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Fatalf("goroutines: %d before, %d after; stacks:\n%s", before, n, buf)
			}
			<-tick.C
		}
	})
}

// readAllWithin reads r until EOF or error within d (a generous bound: it only
// fails when something hangs).
func readAllWithin(t testing.TB, c net.Conn, d time.Duration) ([]byte, error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	return io.ReadAll(c)
}

func mustf(t testing.TB, err error, format string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", fmt.Sprintf(format, args...), err)
	}
}

func bufioReader(c net.Conn) *bufio.Reader {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	return bufio.NewReader(c)
}
