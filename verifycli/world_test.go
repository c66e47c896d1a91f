package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/evidence/agent"
	"github.com/tee-ingress/tee-ingress/internal/agentsim"
	"github.com/tee-ingress/tee-ingress/internal/ctlog"
	"github.com/tee-ingress/tee-ingress/internal/dnsserver"
)

const (
	testZone       = "example.test"
	testDomain     = "app.example.test"
	testAccountURI = "https://acme-v02.api.letsencrypt.org/acme/acct/1234567890"
)

// Simulator seeds: the deployment's, and another TEE's.
var (
	worldSeed = []byte("verifycli tests: simulator seed.")
	otherSeed = []byte("verifycli tests: another TEE....")
)

func accountJSON(uri string) []byte {
	return []byte(fmt.Sprintf(`{"body":{"status":"valid","contact":["mailto:ops@example.test"]},"uri":%q}`, uri))
}

func caaPin(name, tag, value string) dns.RR {
	return dnsserver.MustRR(fmt.Sprintf(`%s. 60 IN CAA 0 %s "%s"`, name, tag, value))
}

func pinValue(uri string) string {
	return "letsencrypt.org;validationmethods=dns-01;accounturi=" + uri
}

// tamperFunc answers a request instead of the evidence handler when it
// returns true.
type tamperFunc func(w http.ResponseWriter, r *http.Request) bool

// world is a tee-ingress deployment of testDomain on loopback, built from the
// real parts: the guest-agent simulator on a unix socket behind
// agent.Agent, an evidence.Publisher and Handler behind a TLS server with
// a certificate of a test CA, an authoritative DNS server holding the CAA
// record, and a crt.sh-compatible CT API.
type world struct {
	t       *testing.T
	dir     string
	sim     *agentsim.Simulator
	agent   *agent.Agent
	ca      *testCA
	cert    issued // served, and in the bundle
	old     issued // expired, in the history
	pub     *evidence.Publisher
	handler *evidence.Handler
	srv     *httptest.Server
	dns     *dnsserver.Server
	ct      *ctlog.Server

	serveCert atomic.Pointer[tls.Certificate]
	tamper    atomic.Pointer[tamperFunc]

	caFile, rootFile string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	now := time.Now().Truncate(time.Second)
	w := &world{t: t, dir: t.TempDir()}
	w.ca = newTestCA(t, "dev CA", now.Add(-365*24*time.Hour), now.Add(365*24*time.Hour))
	w.sim = newSimulator(t, worldSeed)
	sock := filepath.Join(shortTempDir(t), "dstack.sock")
	if err := w.sim.Serve(sock); err != nil {
		t.Fatal(err)
	}
	var err error
	if w.agent, err = agent.New(agent.Options{Endpoint: sock}); err != nil {
		t.Fatal(err)
	}
	w.cert = w.ca.issue(t, nil, now.Add(-time.Hour), now.Add(60*24*time.Hour), testDomain)
	w.old = w.ca.issue(t, nil, now.Add(-100*24*time.Hour), now.Add(-10*24*time.Hour), testDomain)
	if w.pub, err = evidence.NewPublisher(evidence.PublisherConfig{Quoter: w.agent}); err != nil {
		t.Fatal(err)
	}
	w.publish(testAccountURI)
	if w.handler, err = evidence.NewHandler(evidence.HandlerConfig{Source: w.pub, Quoter: w.agent, LiveQuoteRate: 1000, LiveQuoteBurst: 1000}); err != nil {
		t.Fatal(err)
	}
	c := w.cert.tlsCert()
	w.serveCert.Store(&c)
	w.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if f := w.tamper.Load(); f != nil && (*f)(rw, r) {
			return
		}
		w.handler.ServeHTTP(rw, r)
	}))
	w.srv.TLS = &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return w.serveCert.Load(), nil }}
	w.srv.StartTLS()
	t.Cleanup(w.srv.Close)

	if w.dns, err = dnsserver.Start(testZone); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.dns.Close() })
	w.dns.Add(caaPin(testDomain, "issue", pinValue(testAccountURI)), dnsserver.MustRR(testZone+`. 60 IN CAA 0 iodef "mailto:security@example.test"`))

	w.ct = newCTServer(t)
	w.ct.Add(w.cert.leaf)
	w.ct.Add(w.cert.leaf)
	w.ct.Add(w.old.leaf)
	w.ct.Add(w.ca.issue(t, nil, now.Add(-time.Hour), now.Add(60*24*time.Hour), "www.example.test").leaf)

	w.caFile = writeFile(t, w.dir, "dev-ca.pem", w.ca.rootPEM())
	w.rootFile = writeFile(t, w.dir, "sim-root.pem", w.sim.RootPEM())
	return w
}

// publish builds and swaps in a bundle for testDomain with account uri.
func (w *world) publish(uri string) *evidence.Bundle {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := w.pub.Publish(ctx, evidence.BundleInput{
		Account: accountJSON(uri),
		Primary: testDomain,
		Certs:   map[string][]byte{testDomain: w.cert.chainPEM},
		History: []evidence.HistoryEntry{evidence.NewHistoryEntry(w.old.leaf)},
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return b
}

func (w *world) setTamper(f tamperFunc) { w.tamper.Store(&f) }

// args is the verifycli command line checking the world, with --json.
func (w *world) args(extra ...string) []string {
	return append([]string{"domain", "https://" + testDomain, "--json", "--connect", w.srv.Listener.Addr().String(),
		"--ca-file", w.caFile, "--tdx-root", w.rootFile, "--resolver", w.dns.Addr(), "--ct-url", w.ct.URL()}, extra...)
}

// bundle is the bundle in force.
func (w *world) bundle() *evidence.Bundle { return w.pub.Current() }

func newSimulator(t testing.TB, seed []byte) *agentsim.Simulator {
	t.Helper()
	s, err := agentsim.New(agentsim.Config{Seed: seed, Stripped: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// quoteFor is the simulator's GetQuote answer for rd.
func quoteFor(t testing.TB, s *agentsim.Simulator, rd [64]byte) []byte {
	t.Helper()
	b, err := s.QuoteFor(rd)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// serveBytes answers with b as JSON or text.
func serveBytes(w http.ResponseWriter, b []byte) {
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

// isFile reports whether r asks for the bundle file name; live reports
// whether r carries a nonce.
func isFile(r *http.Request, name string) (ok, live bool) {
	return r.URL.Path == evidence.Prefix+"/"+name, r.URL.Query().Has("nonce")
}

// requestNonce is the nonce of a live-quote request.
func requestNonce(t testing.TB, r *http.Request) [32]byte {
	n, err := evidence.ParseNonce(r.URL.Query().Get("nonce"))
	if err != nil {
		t.Errorf("live quote request without a valid nonce: %v", err)
	}
	return n
}

func newCTServer(t testing.TB) *ctlog.Server {
	c := ctlog.Start()
	t.Cleanup(c.Close)
	return c
}
