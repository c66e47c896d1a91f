package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/evidence/agent"
	"github.com/tee-ingress/tee-ingress/internal/agentsim"
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
	ct      *ctServer

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
	w.ct.add(w.cert.leaf, true)
	w.ct.add(w.cert.leaf, false)
	w.ct.add(w.old.leaf, false)
	w.ct.add(w.ca.issue(t, nil, now.Add(-time.Hour), now.Add(60*24*time.Hour), "www.example.test").leaf, false)

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
		"--ca-file", w.caFile, "--tdx-root", w.rootFile, "--resolver", w.dns.Addr(), "--ct-url", w.ct.url()}, extra...)
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

// ctServer is a crt.sh-compatible CT search API: GET /?q=<name>&output=json
// lists the certificates with that exact name, GET /?d=<id> downloads one.
type ctServer struct {
	mu     sync.Mutex
	rows   []ctRow
	nextID int64
	status int // answer every request with this status when set
	srv    *httptest.Server
	t      testing.TB
	hits   atomic.Int64
}

type ctRow struct {
	entry map[string]any
	names []string
	der   []byte
	id    int64
}

func newCTServer(t testing.TB) *ctServer {
	c := &ctServer{nextID: 9000000000, t: t}
	c.srv = httptest.NewServer(c)
	t.Cleanup(c.srv.Close)
	return c
}

func (c *ctServer) url() string { return c.srv.URL + "/" }

// add logs cert (as a precertificate row when precert; both rows carry the
// same DER here, which has the same key and serial as a real precertificate).
func (c *ctServer) add(cert *x509.Certificate, precert bool) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nextID++
	// crt.sh shows the DER integer's bytes: a sign byte when the high bit is set.
	serial := cert.SerialNumber.Bytes()
	if len(serial) > 0 && serial[0]&0x80 != 0 {
		serial = append([]byte{0}, serial...)
	}
	names := append([]string(nil), cert.DNSNames...)
	c.rows = append(c.rows, ctRow{id: c.nextID, names: names, der: cert.Raw, entry: map[string]any{
		"issuer_ca_id":    16418,
		"issuer_name":     cert.Issuer.String(),
		"common_name":     cert.Subject.CommonName,
		"name_value":      strings.Join(names, "\n"),
		"id":              c.nextID,
		"entry_timestamp": cert.NotBefore.UTC().Format("2006-01-02T15:04:05.000"),
		"not_before":      cert.NotBefore.UTC().Format("2006-01-02T15:04:05"),
		"not_after":       cert.NotAfter.UTC().Format("2006-01-02T15:04:05"),
		"serial_number":   hex.EncodeToString(serial),
		"result_count":    len(names) + 1,
	}})
	_ = precert
	return c.nextID
}

func (c *ctServer) setStatus(s int) {
	c.mu.Lock()
	c.status = s
	c.mu.Unlock()
}

func (c *ctServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.hits.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.status != 0 {
		http.Error(w, "<html>502 Bad Gateway</html>", c.status)
		return
	}
	q := r.URL.Query()
	if d := q.Get("d"); d != "" {
		for _, row := range c.rows {
			if strconv.FormatInt(row.id, 10) == d {
				w.Header().Set("Content-Type", "application/pkix-cert")
				pem.Encode(w, &pem.Block{Type: "CERTIFICATE", Bytes: row.der})
				return
			}
		}
		http.NotFound(w, r)
		return
	}
	if q.Get("output") != "json" || q.Get("q") == "" {
		http.Error(w, "want ?q=<name>&output=json or ?d=<id>", http.StatusBadRequest)
		return
	}
	name := strings.ToLower(q.Get("q"))
	out := []map[string]any{}
	for i := len(c.rows) - 1; i >= 0; i-- { // newest first, as crt.sh
		for _, n := range c.rows[i].names {
			if strings.ToLower(n) == name {
				out = append(out, c.rows[i].entry)
				break
			}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}
