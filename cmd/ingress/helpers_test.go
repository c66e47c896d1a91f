package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/tee-ingress/tee-ingress/internal/syncbuf"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/internal/acmeca"
	"github.com/tee-ingress/tee-ingress/internal/agentsim"
	"github.com/tee-ingress/tee-ingress/internal/cfemu"
	"github.com/tee-ingress/tee-ingress/internal/dnsserver"
)

const (
	testZone  = "ingress.test"
	testToken = "tok-9f8e7d6c5b4a-secret"
)

// Binaries are built once per test run, without -race (the binary's own
// tests are the packages' -race runs; this is about the program).
var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binaries returns the paths of the ingress and verifycli binaries, built
// side by side (so that --dev prints the verifycli path, as in the image).
func binaries(t testing.TB) (ingress, verifycli string) {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "ingress-test-bin-")
		if binErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", ".", "../../verifycli")
		out, err := cmd.CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return filepath.Join(binDir, "ingress"), filepath.Join(binDir, "verifycli")
}

// waitFor polls cond every few milliseconds until it holds or the deadline
// passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool, dump func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			msg := ""
			if dump != nil {
				msg = dump()
			}
			t.Fatalf("timed out after %s waiting for %s\n%s", timeout, what, msg)
		}
		<-tick.C
	}
}

// proc is a running ingress binary.
type proc struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdout *syncbuf.Buffer
	stderr *syncbuf.Buffer
	done   chan struct{}
	err    error
}

// startIngress runs bin with exactly env (nothing inherited from the test
// process: a developer's real credentials must never reach it) and args.
func startIngress(t testing.TB, bin string, env map[string]string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &proc{t: t, cmd: cmd, stdout: &syncbuf.Buffer{}, stderr: &syncbuf.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() || os.Getenv("INGRESS_TEST_LOGS") != "" {
			t.Logf("ingress stderr:\n%s", p.stderr.String())
		}
	})
	return p
}

func (p *proc) logs() string { return p.stderr.String() + "\nstdout:\n" + p.stdout.String() }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitLog waits for re in the log and returns its submatches.
func (p *proc) waitLog(re *regexp.Regexp, timeout time.Duration) []string {
	p.t.Helper()
	var m []string
	waitFor(p.t, "log "+re.String(), timeout, func() bool {
		m = re.FindStringSubmatch(p.stderr.String())
		if m == nil && p.exited() {
			p.t.Fatalf("ingress exited (%v) before logging %s:\n%s", p.err, re, p.logs())
		}
		return m != nil
	}, p.logs)
	return m
}

var (
	listenRe  = regexp.MustCompile(`msg=listening addr=(\S+)`)
	metricsRe = regexp.MustCompile(`msg="metrics listening" addr=(\S+)`)
	readyRe   = regexp.MustCompile(`msg=ready `)
)

func (p *proc) addr() string        { return p.waitLog(listenRe, 20*time.Second)[1] }
func (p *proc) metricsAddr() string { return p.waitLog(metricsRe, 20*time.Second)[1] }
func (p *proc) waitReady()          { p.waitLog(readyRe, 60*time.Second) }

// stop sends SIGTERM and returns the exit status.
func (p *proc) stop() int {
	p.t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	return p.wait(30 * time.Second)
}

func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("ingress did not exit within %s:\n%s", timeout, p.logs())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		p.t.Fatal(p.err)
	}
	return 0
}

// world is the outside of a TEE on loopback: DNS for ingress.test, the
// Cloudflare API emulator over it, pebble validating against it, and the
// guest-agent simulator on a unix socket.
type world struct {
	dir      string
	dns      *dnsserver.Server
	cf       *cfemu.Emulator
	ca       *acmeca.CA
	sim      *agentsim.Simulator
	sock     string
	acmeCA   string // PEM file: the ACME server's HTTPS certificate
	cfCA     string // PEM file: the Cloudflare emulator's HTTPS certificate
	roots    string // PEM file: pebble's issuing roots
	tdxRoot  string // PEM file: the simulator's root
	rootPool *x509.CertPool
}

func newWorld(t testing.TB, caOpts acmeca.Options) *world {
	t.Helper()
	// Unix socket paths are limited to 108 bytes; t.TempDir can be long.
	dir, err := os.MkdirTemp("", "ingw-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	w := &world{dir: dir, sock: filepath.Join(dir, "dstack.sock")}
	if w.dns, err = dnsserver.Start(testZone); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.dns.Close() })
	w.cf = cfemu.New(w.dns, testToken)
	t.Cleanup(w.cf.Close)
	caOpts.DNSAddr = w.dns.Addr()
	if w.ca, err = acmeca.Start(caOpts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.ca.Close)
	if w.sim, err = agentsim.New(agentsim.Config{Stripped: true}); err != nil {
		t.Fatal(err)
	}
	if err := w.sim.Serve(w.sock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.sim.Close() })
	w.acmeCA = writeServerCert(t, dir, "acme-https.pem", w.ca.DirectoryURL())
	w.cfCA = writeServerCert(t, dir, "cf-https.pem", w.cf.URL())
	roots, err := w.ca.RootsPEM()
	if err != nil {
		t.Fatal(err)
	}
	w.roots = filepath.Join(dir, "roots.pem")
	w.tdxRoot = filepath.Join(dir, "tdx-root.pem")
	os.WriteFile(w.roots, roots, 0o644)
	os.WriteFile(w.tdxRoot, w.sim.RootPEM(), 0o644)
	if w.rootPool, err = w.ca.Roots(); err != nil {
		t.Fatal(err)
	}
	return w
}

// writeServerCert saves the certificate a test HTTPS server presents, for
// the binary to trust (ACME_CA_ROOTS, CLOUDFLARE_API_CA).
func writeServerCert(t testing.TB, dir, name, rawURL string) string {
	t.Helper()
	host := strings.TrimPrefix(rawURL, "https://")
	host = host[:strings.IndexByte(host, '/')]
	c, err := tls.Dial("tcp", host, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	der := c.ConnectionState().PeerCertificates[0].Raw
	path := filepath.Join(dir, name)
	os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	return path
}

// env is a complete dns-01 configuration against the world; extra entries
// override it ("" values are kept: an empty variable counts as unset).
func (w *world) env(state string, extra map[string]string) map[string]string {
	e := map[string]string{
		"DOMAIN":                    "app." + testZone,
		"TARGET_ENDPOINT":           "127.0.0.1:9",
		"CLOUDFLARE_API_TOKEN":      testToken,
		"CLOUDFLARE_API_URL":        w.cf.URL(),
		"CLOUDFLARE_API_CA":         w.cfCA,
		"ACME_DIRECTORY":            w.ca.DirectoryURL(),
		"ACME_CA_ROOTS":             w.acmeCA,
		"DNS_RESOLVERS":             w.dns.Addr(),
		"DSTACK_SIMULATOR_ENDPOINT": w.sock,
		"STATE_DIR":                 filepath.Join(state, "letsencrypt"),
		"EVIDENCE_DIR":              filepath.Join(state, "evidences"),
		"DRAIN_TIMEOUT":             "10s",
	}
	for k, v := range extra {
		e[k] = v
	}
	return e
}

// client trusts pebble's roots and dials addr for every name.
func (w *world) client(addr string) *http.Client {
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: w.rootPool},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
}

func get(t testing.TB, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp, string(b)
}

// backend is an HTTP backend that names itself and echoes what the proxy
// forwarded. /slow blocks until release is closed.
type backend struct {
	name    string
	addr    string
	srv     *http.Server
	slowIn  chan struct{} // receives when a /slow request arrived
	release chan struct{}
}

func newBackend(t testing.TB, name string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, addr: ln.Addr().String(), slowIn: make(chan struct{}, 16), release: make(chan struct{})}
	b.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			b.slowIn <- struct{}{}
			select {
			case <-b.release:
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintf(w, "%s host=%s proto=%s xfp=%s xff=%s", b.name, r.Host, r.Proto, r.Header.Get("X-Forwarded-Proto"), r.Header.Get("X-Forwarded-For"))
	})}
	go b.srv.Serve(ln)
	t.Cleanup(func() {
		select {
		case <-b.release:
		default:
			close(b.release)
		}
		b.srv.Close()
	})
	return b
}

// selfSignedFiles writes a certificate and key for names.
func selfSignedFiles(t testing.TB, names ...string) (certFile, keyFile string, pool *x509.CertPool) {
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

// scrape returns the metrics text.
func scrape(t testing.TB, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func readyz(t testing.TB, addr string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func regexpMust(s string) *regexp.Regexp { return regexp.MustCompile(s) }
