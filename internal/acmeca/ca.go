package acmeca

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
)

// Paths of pebble's ACME resources (pebble/v2 wfe; they differ from
// Boulder's on purpose).
const (
	newOrderPath  = "/order-plz"
	newAcctPath   = "/sign-me-up"
	orderPath     = "/my-order/"
	authzPath     = "/authZ/"
	challengePath = "/chalZ/"
	certPath      = "/certZ/"
	noncePath     = "/nonce-plz"
)

// Options configures Start.
type Options struct {
	// DNSAddr is the "host:port" of the DNS server pebble's validation
	// authority queries (over TCP) for DNS-01 TXT records and for the
	// addresses of HTTP-01 and TLS-ALPN-01 targets. Required.
	DNSAddr string
	// Logger receives pebble's log lines at debug level. nil discards them.
	Logger *slog.Logger
	// CertLifetime is the validity of issued certificates, whole seconds.
	// Zero means pebble's default (90 days).
	CertLifetime time.Duration
	// CAAIdentities are the issuer domains the directory advertises in
	// meta.caaIdentities. nil means pebble's ["pebble.letsencrypt.org"].
	CAAIdentities []string
	// AuthzReusePercent is how often pebble reuses a valid authorization for
	// an identifier instead of asking for a new challenge, 0-100. Zero means
	// never: every order is validated afresh, which keeps tests
	// deterministic.
	AuthzReusePercent int
	// HTTPPort and TLSPort are the ports pebble's validation authority dials
	// for HTTP-01 and TLS-ALPN-01. Zero means pebble's defaults, 5002 and
	// 5001.
	HTTPPort, TLSPort int
	// Listen is the "host:port" the ACME server listens on, so that a
	// restart can come back at the same directory URL. Empty: a free port
	// on 127.0.0.1.
	Listen string
}

// CA is a running pebble with its ACME server on an httptest TLS server on
// 127.0.0.1. It is safe for concurrent use.
type CA struct {
	srv     *httptest.Server
	client  *http.Client
	ca      *ca.CAImpl
	db      *db.MemoryStore
	handler http.Handler

	mu           sync.Mutex
	orders       int
	lastReplaces string
	limitLeft    int
	limitRetry   time.Duration
	// acctMu serialises new-account requests: pebble updates an
	// existing account while encoding it for another request for the
	// same key (replicas register one KMS-derived key at once).
	acctMu  sync.Mutex
	issued  []*x509.Certificate // leaves downloaded, once each
	hold    chan struct{}       // non-nil: new orders wait for it to close
	waiting int
}

// envMu serializes the environment changes around pebble's constructors.
var envMu sync.Mutex

// Start validates opts and starts a CA.
func Start(opts Options) (*CA, error) {
	if opts.DNSAddr == "" {
		return nil, errors.New("starting acme test ca: Options.DNSAddr is required: the host:port of the DNS server that answers the challenge records")
	}
	if host, port, err := net.SplitHostPort(opts.DNSAddr); err != nil || host == "" || port == "" {
		return nil, fmt.Errorf("starting acme test ca: Options.DNSAddr %q is not host:port", opts.DNSAddr)
	} else if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return nil, fmt.Errorf("starting acme test ca: Options.DNSAddr %q has no valid port (1-65535)", opts.DNSAddr)
	}
	if opts.CertLifetime < 0 || (opts.CertLifetime > 0 && opts.CertLifetime < time.Second) {
		return nil, fmt.Errorf("starting acme test ca: Options.CertLifetime %v must be zero (pebble's default) or at least 1s", opts.CertLifetime)
	}
	if opts.AuthzReusePercent < 0 || opts.AuthzReusePercent > 100 {
		return nil, fmt.Errorf("starting acme test ca: Options.AuthzReusePercent %d is outside 0-100", opts.AuthzReusePercent)
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"HTTPPort", opts.HTTPPort}, {"TLSPort", opts.TLSPort}} {
		if p.v < 0 || p.v > 65535 {
			return nil, fmt.Errorf("starting acme test ca: Options.%s %d is outside 0-65535", p.name, p.v)
		}
	}
	httpPort, tlsPort := opts.HTTPPort, opts.TLSPort
	if httpPort == 0 {
		httpPort = 5002
	}
	if tlsPort == 0 {
		tlsPort = 5001
	}
	caaIDs := opts.CAAIdentities
	if caaIDs == nil {
		caaIDs = []string{"pebble.letsencrypt.org"}
	}

	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	plog := slog.NewLogLogger(logger.Handler(), slog.LevelDebug)

	profile := ca.Profile{Description: "tee-ingress test profile"}
	if opts.CertLifetime > 0 {
		profile.ValidityPeriod = uint64(math.Ceil(opts.CertLifetime.Seconds()))
	}

	c := &CA{db: db.NewMemoryStore()}
	w := withPebbleEnv(map[string]string{
		"PEBBLE_VA_NOSLEEP":      "1",
		"PEBBLE_VA_ALWAYS_VALID": "0",
		"PEBBLE_WFE_NONCEREJECT": "0",
		"PEBBLE_AUTHZREUSE":      strconv.Itoa(opts.AuthzReusePercent),
	}, func() wfe.WebFrontEndImpl {
		// One intermediate under one root, ECDSA keys (fast to generate).
		c.ca = ca.New(plog, c.db, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": profile})
		v := va.New(plog, httpPort, tlsPort, false, opts.DNSAddr, c.db)
		// Zero retry-after for authz and order: pebble would send either
		// seconds or an HTTP date at random; this package adds "1" itself.
		return wfe.New(plog, c.db, v, c.ca, caaIDs, false, false, 0, 0)
	})
	c.handler = w.Handler()

	c.srv = httptest.NewUnstartedServer(http.HandlerFunc(c.serve))
	c.srv.Config.ErrorLog = plog
	if opts.Listen != "" {
		ln, err := net.Listen("tcp", opts.Listen)
		if err != nil {
			c.srv.Close()
			return nil, fmt.Errorf("acmeca: listening on %s: %w", opts.Listen, err)
		}
		c.srv.Listener.Close()
		c.srv.Listener = ln
	}
	c.srv.StartTLS()
	c.client = &http.Client{Transport: c.srv.Client().Transport.(*http.Transport).Clone()}
	return c, nil
}

// withPebbleEnv runs f with the environment variables set, then restores
// them. Pebble reads them only in its constructors.
func withPebbleEnv[T any](env map[string]string, f func() T) T {
	envMu.Lock()
	defer envMu.Unlock()
	type saved struct {
		v  string
		ok bool
	}
	old := make(map[string]saved, len(env))
	for k, v := range env {
		o, ok := os.LookupEnv(k)
		old[k] = saved{o, ok}
		os.Setenv(k, v)
	}
	defer func() {
		for k, s := range old {
			if s.ok {
				os.Setenv(k, s.v)
			} else {
				os.Unsetenv(k)
			}
		}
	}()
	return f()
}

// Addr is the host:port the ACME server listens on.
func (c *CA) Addr() string { return c.srv.Listener.Addr().String() }

// DirectoryURL returns the ACME directory URL.
func (c *CA) DirectoryURL() string { return c.srv.URL + wfe.DirectoryPath }

// HTTPClient returns a client that trusts the ACME server's TLS certificate.
// Give it to lego's Config.HTTPClient.
func (c *CA) HTTPClient() *http.Client { return c.client }

// RootsPEM returns pebble's issuing root certificate(s), PEM-encoded: the
// trust anchors for the chains it issues (not the HTTPS server's certificate).
func (c *CA) RootsPEM() ([]byte, error) {
	var buf bytes.Buffer
	n := c.ca.GetNumberOfRootCerts()
	for i := range n {
		root := c.ca.GetRootCert(i)
		if root == nil {
			return nil, fmt.Errorf("reading pebble root %d of %d: missing", i, n)
		}
		buf.Write(root.PEM())
	}
	if buf.Len() == 0 {
		return nil, errors.New("reading pebble roots: pebble has none")
	}
	return buf.Bytes(), nil
}

// Roots returns pebble's issuing roots as a pool, for x509.VerifyOptions.
func (c *CA) Roots() (*x509.CertPool, error) {
	pemBytes, err := c.RootsPEM()
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, errors.New("reading pebble roots: no certificate in the PEM")
	}
	return pool, nil
}

// Orders returns how many new-order requests pebble accepted (201 Created).
func (c *CA) Orders() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.orders
}

// LastReplaces returns the ARI "replaces" field of the most recent new-order
// request seen, rate-limited or not ("" if it had none).
func (c *CA) LastReplaces() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastReplaces
}

// SetRenewalInfo makes the ARI renewalInfo resource for leaf (which pebble
// must have issued) suggest the window [start, end), the equivalent of
// pebble's management endpoint /set-renewal-info/.
func (c *CA) SetRenewalInfo(leaf *x509.Certificate, start, end time.Time) error {
	if leaf == nil {
		return errors.New("setting renewal info: leaf is nil")
	}
	if !end.After(start) {
		return fmt.Errorf("setting renewal info: window end %s is not after start %s", end.Format(time.RFC3339), start.Format(time.RFC3339))
	}
	body, err := json.Marshal(map[string]any{
		"suggestedWindow": map[string]string{
			"start": start.UTC().Format(time.RFC3339),
			"end":   end.UTC().Format(time.RFC3339),
		},
	})
	if err != nil {
		return fmt.Errorf("setting renewal info: %w", err)
	}
	if err := c.db.SetARIResponse(leaf.SerialNumber, string(body)); err != nil {
		return fmt.Errorf("setting renewal info for serial %x: %w", leaf.SerialNumber, err)
	}
	return nil
}

// RateLimitNextOrders makes the next n new-order requests fail with 429
// urn:ietf:params:acme:error:rateLimited and, if retryAfter is positive, a
// Retry-After header of that many seconds (rounded up). n <= 0 clears it.
func (c *CA) RateLimitNextOrders(n int, retryAfter time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.limitLeft, c.limitRetry = max(n, 0), retryAfter
}

// HoldNewOrders makes new-order requests wait until release is called, or
// until their client goes away (then pebble never sees them), so that a
// test can act on an issuer in the middle of an order.
func (c *CA) HoldNewOrders() (release func()) {
	ch := make(chan struct{})
	c.mu.Lock()
	c.hold = ch
	c.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			c.hold = nil
			c.mu.Unlock()
			close(ch)
		})
	}
}

// Waiting is how many new-order requests HoldNewOrders holds now.
func (c *CA) Waiting() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.waiting
}

// Issued lists the leaf of every certificate downloaded from the CA, once
// each: what a CT log would show for this CA.
func (c *CA) Issued() []*x509.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*x509.Certificate(nil), c.issued...)
}

func (c *CA) noteIssued(chain []byte) {
	blk, _ := pem.Decode(chain)
	if blk == nil {
		return
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.issued {
		if l.Equal(leaf) {
			return
		}
	}
	c.issued = append(c.issued, leaf)
}

// captureWriter keeps a copy of what it writes.
type captureWriter struct {
	http.ResponseWriter
	body bytes.Buffer
}

func (w *captureWriter) Write(b []byte) (int, error) {
	w.body.Write(b)
	return w.ResponseWriter.Write(b)
}

// Close stops the ACME server, waiting for requests in flight.
func (c *CA) Close() {
	c.srv.Close()
	c.client.CloseIdleConnections()
}

// serve wraps pebble's handler: it counts and inspects new orders, injects
// rate limits and adds Retry-After to polled resources.
func (c *CA) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.URL.Path == newAcctPath {
		c.acctMu.Lock()
		defer c.acctMu.Unlock()
	}
	if r.Method == http.MethodPost && r.URL.Path == newOrderPath {
		c.newOrder(w, r)
		return
	}
	if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, certPath) {
		cw := &captureWriter{ResponseWriter: w}
		c.handler.ServeHTTP(cw, r)
		c.noteIssued(cw.body.Bytes())
		return
	}
	if r.Method == http.MethodPost && (strings.HasPrefix(r.URL.Path, challengePath) ||
		strings.HasPrefix(r.URL.Path, authzPath) || strings.HasPrefix(r.URL.Path, orderPath)) {
		w = &retryAfterWriter{ResponseWriter: w}
	}
	c.handler.ServeHTTP(w, r)
}

func (c *CA) newOrder(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "reading request body", http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	replaces := orderReplaces(body)
	aliasSignedSerial(c.db, replaces)

	if !c.waitHold(r) {
		return
	}
	c.mu.Lock()
	c.lastReplaces = replaces
	limited := c.limitLeft > 0
	retry := c.limitRetry
	if limited {
		c.limitLeft--
	}
	c.mu.Unlock()

	if limited {
		c.rateLimited(w, r, retry)
		return
	}
	sw := &statusWriter{ResponseWriter: w}
	c.handler.ServeHTTP(sw, r)
	if sw.status == http.StatusCreated {
		c.mu.Lock()
		c.orders++
		c.mu.Unlock()
	}
}

// waitHold waits while new orders are held; false: the client went away.
func (c *CA) waitHold(r *http.Request) bool {
	c.mu.Lock()
	hold := c.hold
	if hold != nil {
		c.waiting++
	}
	c.mu.Unlock()
	if hold == nil {
		return true
	}
	defer func() {
		c.mu.Lock()
		c.waiting--
		c.mu.Unlock()
	}()
	select {
	case <-hold:
		return true
	case <-r.Context().Done():
		return false
	}
}

// orderReplaces reads the "replaces" member of a new-order JWS payload
// (flattened JSON serialization, base64url payload); "" if absent or
// malformed (pebble then rejects the request itself).
func orderReplaces(body []byte) string {
	var jws struct {
		Payload string `json:"payload"`
	}
	if json.Unmarshal(body, &jws) != nil {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(jws.Payload, "="))
	if err != nil {
		return ""
	}
	var order struct {
		Replaces string `json:"replaces"`
	}
	if json.Unmarshal(payload, &order) != nil {
		return ""
	}
	return order.Replaces
}

// aliasSignedSerial works around letsencrypt/pebble#550 (open in v2.10.1):
// pebble files an issued order under the hex of the serial's magnitude
// (big.Int.Bytes) but looks a new order's "replaces" up by the hex of the
// certID's serial bytes, which RFC 9773 section 4.1 makes the DER value
// bytes, with a 0x00 sign byte in front when the top bit is set. Pebble's
// serials are below 2^63, so that happens to the one serial in 256 that is
// shorter than 8 bytes and starts at or above 0x80, and pebble then answers
// a correct renewal with a 500. Filing the same order under the signed form
// too, before pebble sees the request, keeps "replaces" working, and since
// both keys point at one order, a second replacement still gets
// alreadyReplaced.
func aliasSignedSerial(store *db.MemoryStore, replaces string) {
	_, serialB64, ok := strings.Cut(replaces, ".")
	if !ok {
		return
	}
	serial, err := base64.RawURLEncoding.DecodeString(serialB64)
	if err != nil || len(serial) < 2 || serial[0] != 0 || serial[1] < 0x80 {
		return
	}
	order, err := store.GetOrderByIssuedSerial(hex.EncodeToString(serial[1:]))
	if err != nil {
		return
	}
	// AddOrderByIssuedSerial keys by CertificateObject.ID; the order's lock
	// keeps pebble's own readers from seeing the borrowed ID.
	order.Lock()
	defer order.Unlock()
	issued := order.CertificateObject
	alias := *issued
	alias.ID = hex.EncodeToString(serial)
	order.CertificateObject = &alias
	_ = store.AddOrderByIssuedSerial(order) // cannot fail: CertificateObject is set
	order.CertificateObject = issued
}

// rateLimited answers like Boulder does when an account hits a limit: a 429
// problem document, a Retry-After header and a fresh nonce.
func (c *CA) rateLimited(w http.ResponseWriter, r *http.Request, retry time.Duration) {
	if nonce := c.freshNonce(r); nonce != "" {
		w.Header().Set("Replay-Nonce", nonce)
	}
	detail := "too many new orders recently"
	if retry > 0 {
		secs := int(math.Ceil(retry.Seconds()))
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		detail += fmt.Sprintf(": retry after %s", time.Now().Add(time.Duration(secs)*time.Second).UTC().Format(time.RFC3339))
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "public, max-age=0, no-cache")
	w.WriteHeader(http.StatusTooManyRequests)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"type":   "urn:ietf:params:acme:error:rateLimited",
		"detail": detail,
		"status": http.StatusTooManyRequests,
	})
}

// freshNonce asks pebble's own nonce endpoint for a nonce, so that an
// injected error hands the client a usable one as real responses do.
func (c *CA) freshNonce(r *http.Request) string {
	req := httptest.NewRequestWithContext(r.Context(), http.MethodHead, noncePath, nil)
	req.Header.Set("User-Agent", "acmeca")
	rec := httptest.NewRecorder()
	c.handler.ServeHTTP(rec, req)
	return rec.Header().Get("Replay-Nonce")
}

// statusWriter records the status code written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// retryAfterWriter adds "Retry-After: 1" to a successful response that has
// none, so that lego polls a pending validation after 1 s instead of 5 s.
type retryAfterWriter struct {
	http.ResponseWriter
	wrote bool
}

func (rw *retryAfterWriter) WriteHeader(code int) {
	if !rw.wrote {
		rw.wrote = true
		if code == http.StatusOK && rw.Header().Get("Retry-After") == "" {
			rw.Header().Set("Retry-After", "1")
		}
	}
	rw.ResponseWriter.WriteHeader(code)
}

func (rw *retryAfterWriter) Write(b []byte) (int, error) {
	if !rw.wrote {
		rw.WriteHeader(http.StatusOK)
	}
	return rw.ResponseWriter.Write(b)
}
