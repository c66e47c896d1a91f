package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/idna"

	"github.com/tee-ingress/tee-ingress/verifycli/report"
)

// maxBody bounds every HTTP answer read from a target (an evidence file,
// acme-info, an attestation).
const maxBody = 8 << 20

// errPinChanged: a later connection to the target presented another
// certificate than the first, so what was fetched over it proves nothing
// about the certificate that was checked.
var errPinChanged = errors.New("the server presented a different certificate on a new connection")

// target is a TLS server verifycli talks to, pinned to the certificate of its
// first handshake: every HTTP request goes over that connection or over a new
// one presenting the very same leaf, so everything fetched is tied to the
// certificate that was checked.
type target struct {
	base    *url.URL // https://host[:port], no path
	host    string   // the URL's host name or IP, for SNI and certificate checks
	addr    string   // where to dial: --connect, else host:port
	timeout time.Duration

	mu    sync.Mutex
	state tls.ConnectionState // of the first handshake
	spare *tls.Conn           // the first connection, until the transport takes it

	client *http.Client
}

// parseTargetURL accepts https://host[:port][/path]; a missing scheme means
// https. The path is ignored.
func parseTargetURL(raw, cmd string) (*url.URL, error) {
	s := raw
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	hint := fmt.Sprintf("give the URL as verifycli %s https://HOST[:PORT]", cmd)
	if err != nil {
		return nil, usageErr(hint, "%s: %q is not a URL", cmd, raw)
	}
	if u.Scheme != "https" {
		return nil, usageErr(hint+"; the evidence must be fetched over TLS", "%s: %q is not an https URL", cmd, raw)
	}
	if u.Hostname() == "" || u.User != nil {
		return nil, usageErr(hint, "%s: %q has no host", cmd, raw)
	}
	host := u.Host
	if net.ParseIP(u.Hostname()) == nil {
		// An internationalized name is verified in its ASCII (xn--) form,
		// the form certificates, CAA and CT use.
		a, err := idna.Lookup.ToASCII(u.Hostname())
		if err != nil {
			return nil, usageErr(hint, "%s: %q is not a valid host name: %v", cmd, u.Hostname(), err)
		}
		host = a
		if p := u.Port(); p != "" {
			host = net.JoinHostPort(a, p)
		}
	}
	return &url.URL{Scheme: "https", Host: host}, nil
}

func newTarget(u *url.URL, connect string, timeout time.Duration) *target {
	t := &target{base: u, host: strings.ToLower(u.Hostname()), timeout: timeout}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	t.addr = net.JoinHostPort(u.Hostname(), port)
	if connect != "" {
		t.addr = connect
	}
	t.client = &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil, // a proxy would break the pin's meaning
			DialTLSContext:        t.dialTLS,
			TLSNextProto:          map[string]func(string, *tls.Conn) http.RoundTripper{}, // HTTP/1.1 only
			MaxIdleConnsPerHost:   1,
			ResponseHeaderTimeout: timeout,
			IdleConnTimeout:       timeout,
		},
		Timeout: timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			return fmt.Errorf("refusing to follow a redirect to %s: evidence must come from the server itself", req.URL)
		},
	}
	return t
}

// close releases the connections.
func (t *target) close() {
	t.mu.Lock()
	if t.spare != nil {
		t.spare.Close()
		t.spare = nil
	}
	t.mu.Unlock()
	t.client.CloseIdleConnections()
}

func (t *target) tlsConfig() *tls.Config {
	return &tls.Config{
		ServerName: t.host,
		// The chain is verified after the handshake (tls.chain), so that an
		// invalid one is a failed check with a reason rather than no answer.
		InsecureSkipVerify: true,
		MinVersion:         tls.VersionTLS12,
		NextProtos:         []string{"http/1.1"},
	}
}

func (t *target) handshake(ctx context.Context) (*tls.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	d := net.Dialer{Timeout: t.timeout}
	raw, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, err
	}
	conn := tls.Client(raw, t.tlsConfig())
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	if len(conn.ConnectionState().PeerCertificates) == 0 {
		conn.Close()
		return nil, errors.New("tls handshake: the server presented no certificate")
	}
	return conn, nil
}

// connect makes the first connection and records its certificate.
func (t *target) connect(ctx context.Context) error {
	conn, err := t.handshake(ctx)
	if err != nil {
		return netError(err, fmt.Sprintf("connecting to %s (%s)", t.host, t.addr), t)
	}
	t.mu.Lock()
	t.state = conn.ConnectionState()
	t.spare = conn
	t.mu.Unlock()
	return nil
}

// dialTLS gives the transport the first connection, then new ones that
// must present the same leaf.
func (t *target) dialTLS(ctx context.Context, _, _ string) (net.Conn, error) {
	t.mu.Lock()
	if c := t.spare; c != nil {
		t.spare = nil
		t.mu.Unlock()
		return c, nil
	}
	want := t.leaf().Raw
	t.mu.Unlock()
	conn, err := t.handshake(ctx)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(conn.ConnectionState().PeerCertificates[0].Raw, want) {
		conn.Close()
		return nil, errPinChanged
	}
	return conn, nil
}

// leaf is the certificate of the first handshake.
func (t *target) leaf() *x509.Certificate { return t.state.PeerCertificates[0] }

// chain is the served chain, leaf first.
func (t *target) chain() []*x509.Certificate { return t.state.PeerCertificates }

// url returns the target's URL for path (with a query, if any).
func (t *target) url(pathAndQuery string) string { return t.base.String() + pathAndQuery }

// get fetches path over the pinned connection: body (at most maxBody bytes),
// status and headers. Only transport failures are errors.
func (t *target) get(ctx context.Context, pathAndQuery, accept string) ([]byte, int, http.Header, error) {
	u := t.url(pathAndQuery)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("fetching %s: %w", u, err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return nil, 0, nil, netError(err, "fetching "+u, t)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, 0, nil, netError(err, "reading "+u, t)
	}
	if len(b) > maxBody {
		return nil, 0, nil, &cliError{err: fmt.Errorf("fetching %s: the answer is over %d bytes", u, maxBody), hint: "this is not an evidence server"}
	}
	return b, resp.StatusCode, resp.Header, nil
}

// tlsConnectCheck describes the first handshake.
func (t *target) tlsConnectCheck() checkT {
	st := t.state
	leaf := t.leaf()
	fp := sha256.Sum256(leaf.Raw)
	return checkT{Name: checkTLSConnect, Status: pass, Got: "sha256 " + hex.EncodeToString(fp[:]),
		Detail: fmt.Sprintf("%s handshake with %s at %s; leaf for %s issued by %s", tls.VersionName(st.Version), t.host, t.addr,
			strings.Join(leaf.DNSNames, ", "), leaf.Issuer.CommonName)}
}

// certificateReport describes the served leaf for the JSON report.
func certificateReport(leaf *x509.Certificate) *report.Certificate {
	fp := sha256.Sum256(leaf.Raw)
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	names := leaf.DNSNames
	if names == nil {
		names = []string{}
	}
	return &report.Certificate{
		SHA256:     hex.EncodeToString(fp[:]),
		SPKISHA256: hex.EncodeToString(spki[:]),
		Subject:    leaf.Subject.String(),
		Issuer:     leaf.Issuer.String(),
		DNSNames:   names,
		Serial:     hex.EncodeToString(leaf.SerialNumber.Bytes()),
		NotBefore:  leaf.NotBefore.UTC(),
		NotAfter:   leaf.NotAfter.UTC(),
	}
}

// pinChanged is the verdict when a later connection presented another
// certificate: a failed check (exit 1), not a network error, because it may
// be a relay or an interception, and a script must not just retry it.
func pinChanged(t *target, err error) *result {
	c := checkT{Name: checkTLSPinned, Status: fail, Want: "the certificate of the first connection", Detail: err.Error(),
		Hint: "a relay or an interception between you and the deployment, or several instances with different certificates behind this name; pick one with --connect to tell which"}
	return &result{checks: []checkT{t.tlsConnectCheck(), c}, certificate: certificateReport(t.leaf())}
}

// netError turns a transport failure into an exit-2 error with a hint
// naming what to change.
func netError(err error, what string, t *target) error {
	var ce *cliError
	if errors.As(err, &ce) {
		return err
	}
	e := &cliError{err: fmt.Errorf("%s: %w", what, err)}
	var dnsErr *net.DNSError
	var netErr net.Error
	var alert tls.AlertError
	var recErr tls.RecordHeaderError
	switch {
	case errors.Is(err, errPinChanged):
		e.hint = "several servers with different certificates answer this name, or the certificate changed meanwhile; retry, or pick one instance with --connect"
	case errors.Is(err, syscall.ECONNREFUSED):
		e.hint = fmt.Sprintf("nothing accepts connections at %s; check the host and port, or --connect", t.addr)
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) && netErr.Timeout():
		e.hint = fmt.Sprintf("no answer within --timeout %s; check the address or raise --timeout", t.timeout)
	case errors.As(err, &dnsErr):
		e.hint = fmt.Sprintf("%s does not resolve; check the name, or give the address with --connect", t.host)
	case errors.As(err, &alert) || errors.As(err, &recErr) || strings.Contains(err.Error(), "tls handshake"):
		e.hint = fmt.Sprintf("%s did not complete a TLS handshake for %s; check that the port serves TLS for this name", t.addr, t.host)
	case errors.Is(err, context.Canceled):
		e.hint = "interrupted"
	default:
		e.hint = "check the network and the address"
	}
	return e
}
