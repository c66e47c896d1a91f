package proxy

import (
	"crypto/tls"
	"fmt"
	"github.com/tee-ingress/tee-ingress/internal/fielderr"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Mode selects how decrypted traffic is forwarded.
type Mode int

const (
	// ModeTCP forwards the decrypted byte stream (L4, any protocol).
	ModeTCP Mode = iota
	// ModeHTTP terminates HTTP/1.1 and HTTP/2 and reverse-proxies requests (L7).
	ModeHTTP
)

// ParseMode parses PROXY_MODE: "tcp" or "http".
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "tcp", "":
		return ModeTCP, nil
	case "http":
		return ModeHTTP, nil
	}
	return 0, fmt.Errorf("mode %q: want tcp or http", s)
}

func (m Mode) String() string {
	switch m {
	case ModeTCP:
		return "tcp"
	case ModeHTTP:
		return "http"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Defaults applied to zero Config fields (DESIGN.md section 4).
const (
	DefaultMaxConns         = 4096
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultConnectTimeout   = 10 * time.Second
	DefaultClientTimeout    = 86400 * time.Second
	DefaultServerTimeout    = 86400 * time.Second
	DefaultHeaderTimeout    = 10 * time.Second
	DefaultMaxHeaderBytes   = 64 << 10
)

// ALPNChallenge is the protocol of tls-alpn-01 (RFC 8737).
const ALPNChallenge = "acme-tls/1"

// Config configures a Server. Only Certs and a way to reach a backend (Default
// or Routes) are required.
type Config struct {
	// Certs chooses the certificate of each handshake. Required.
	Certs CertSource
	// Challenges answers tls-alpn-01: a ClientHello offering acme-tls/1 for a name
	// with a pending challenge gets that certificate, and the connection is closed
	// after the handshake. Nil: such ClientHellos fail the handshake.
	Challenges ChallengeSource

	// Mode is ModeTCP (the zero value) or ModeHTTP.
	Mode Mode
	// Default is the backend for server names that match no route
	// (TARGET_ENDPOINT). Zero: such connections are closed after the handshake in
	// tcp mode and answered 421 in http mode.
	Default Target
	// Routes are per-domain backends (ROUTING_MAP), matched by SNI in tcp mode
	// and by the Host header (falling back to SNI) in http mode. Nil: every name
	// goes to Default.
	Routes []Route

	// Evidence serves /evidences and everything under /evidences/ (or the
	// roots in LocalPaths). In tcp mode only HTTP/1.x requests are
	// recognised (see the package comment). Nil: no path is special and
	// everything goes to the backend.
	Evidence http.Handler

	// LocalPaths are the path roots Evidence answers, each one segment like
	// "/evidences" or "/attestation". Nil: just "/evidences". Every other
	// path belongs to the backend, so list only what the ingress itself
	// must answer.
	LocalPaths []string

	// ALPN lists the protocols offered in the TLS handshake. In tcp mode the
	// backend must speak what is negotiated; nil offers none, so HTTP clients fall
	// back to HTTP/1.1 and evidence stays reachable. In http mode it may only
	// contain "h2" and "http/1.1"; nil offers both.
	ALPN []string

	// ProxyProtocol sends a PROXY protocol v2 header at the start of every backend
	// connection, carrying the client's address and port, the SNI (TLV
	// PP2_TYPE_AUTHORITY) and the TLS version (PP2_TYPE_SSL). tcp mode only (http
	// mode pools backend connections and sends X-Forwarded-For instead). False:
	// no header.
	ProxyProtocol bool
	// ProxyProtocolIn requires a PROXY protocol header (v2 or v1) at the start
	// of every client connection, before TLS, as the dstack gateway sends when
	// the app's compose marks the port "pp": the client's address in it is
	// the connection's from then on (X-Forwarded-For, the PROXY header to
	// backends, access logs, the evidence handler's r.RemoteAddr). A
	// connection whose header is missing, malformed, or late past
	// HandshakeTimeout is closed and counted in Stats.ProxyHeaderRefused.
	// False: no header is read (one would fail the TLS handshake).
	ProxyProtocolIn bool
	// ProxyProtocolFrom are the peers allowed to send that header; a
	// connection from elsewhere is closed and counted. Empty: any peer (in
	// dstack only the gateway reaches the port).
	ProxyProtocolFrom []netip.Prefix

	// BackendTLS is the client configuration for https:// targets; ServerName
	// defaults to the target's host. Nil: system roots, TLS 1.2 minimum.
	BackendTLS *tls.Config

	// MaxConns bounds open client connections; one more is closed at once and
	// counted in Stats.Refused. Zero: DefaultMaxConns. Negative: no bound.
	MaxConns int
	// HandshakeTimeout bounds the TLS handshake. Zero: DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// ConnectTimeout bounds dialling a backend. Zero: DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// ClientTimeout is how long a connection may sit idle. tcp mode closes a
	// connection (cleanly: close_notify, then FIN) once no byte moved in either
	// direction for the smaller of ClientTimeout and ServerTimeout; http mode
	// uses it as the keep-alive idle time. Zero: DefaultClientTimeout.
	ClientTimeout time.Duration
	// ServerTimeout bounds waiting for the backend: in tcp mode see
	// ClientTimeout; http mode answers 502 when the backend's response headers
	// take longer. Zero: DefaultServerTimeout.
	ServerTimeout time.Duration
	// HeaderTimeout bounds reading the headers of an HTTP request (http mode, and
	// evidence requests in tcp mode). Zero: DefaultHeaderTimeout.
	HeaderTimeout time.Duration
	// MaxHeaderBytes bounds the size of HTTP request headers; larger requests get
	// 431. Zero: DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// KeepUnderscoreHeaders forwards request header fields whose names hold
	// an underscore (http mode). False: they are dropped, as nginx does by
	// default, because backends that read '_' as '-' (CGI, WSGI, PHP) would
	// see "Content_Length" as Content-Length: a way to smuggle framing.
	KeepUnderscoreHeaders bool

	// AccessLog logs one line per HTTP request at info level (http mode):
	// method, host, path (no query: it may carry secrets), status, body
	// bytes sent, duration, backend and client address. tcp mode logs each
	// connection at debug level whatever this says. False: no request log.
	AccessLog bool

	// PlainCore runs only the standard-library core: crypto/tls, two copies
	// with CloseWrite in tcp mode, net/http and httputil.ReverseProxy in http
	// mode. Off are the performance engine's parts: raw socket I/O, the epoll
	// watcher that holds idle tcp-mode connections without a goroutine, and
	// the HTTP/1.1 fast path with its backend pool (h1.go). False (the zero
	// value): the fast path is on. The core is the reference the fast path
	// is tested against; an operator can fall back to it.
	PlainCore bool

	// PlainHTTP2 sends HTTP/2 connections to net/http's server even when
	// the fast path is on. False (the zero value): an h2 connection whose
	// server name routes to a plain HTTP backend is served by the HTTP/2
	// fast path (proxy/internal/h2fast); other h2 connections, and all of
	// them under PlainCore, go to net/http.
	PlainHTTP2 bool

	// Logger receives connection and error logs. Nil: discard.
	Logger *slog.Logger
}

// withDefaults validates c and returns a copy with zero fields defaulted. Errors
// name the field to change.
func (c Config) withDefaults() (Config, error) {
	if c.Certs == nil {
		return c, &fielderr.Error{Field: "Certs", Problem: "nil", Accepted: "a certificate source"}
	}
	switch c.Mode {
	case ModeTCP, ModeHTTP:
	default:
		return c, &fielderr.Error{Field: "Mode", Value: strconv.Itoa(int(c.Mode)), Accepted: "ModeTCP or ModeHTTP"}
	}
	if err := c.checkBackends(); err != nil {
		return c, err
	}
	if c.Mode == ModeHTTP && c.ProxyProtocol {
		return c, &fielderr.Error{Field: "ProxyProtocol", Value: "true", Problem: "needs tcp mode: http mode pools backend connections and sends X-Forwarded-For instead"}
	}
	if err := c.checkALPN(); err != nil {
		return c, err
	}
	if c.Mode == ModeHTTP && len(c.ALPN) == 0 {
		c.ALPN = []string{"h2", "http/1.1"}
	}
	c.ALPN = slices.Clone(c.ALPN)
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if err := c.defaultTimeouts(); err != nil {
		return c, err
	}
	if c.MaxHeaderBytes < 0 {
		return c, &fielderr.Error{Field: "MaxHeaderBytes", Value: strconv.Itoa(c.MaxHeaderBytes), Problem: "negative",
			Accepted: fmt.Sprintf("a positive size, or zero for %d", DefaultMaxHeaderBytes)}
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// checkBackends checks Default, Routes and LocalPaths.
func (c *Config) checkBackends() error {
	if c.Default.IsZero() && len(c.Routes) == 0 {
		return &fielderr.Error{Field: "Default", Problem: "no backend", Accepted: "Default or Routes set"}
	}
	for _, r := range c.LocalPaths {
		if err := checkLocalRoot(r); err != nil {
			return &fielderr.Error{Field: "LocalPaths", Value: r, Err: err}
		}
	}
	if len(c.LocalPaths) > 0 && c.Evidence == nil {
		return &fielderr.Error{Field: "LocalPaths", Problem: "set without Evidence: nothing would answer them"}
	}
	type namedTarget struct {
		field, value string
		t            Target
	}
	var targets []namedTarget
	if !c.Default.IsZero() {
		targets = append(targets, namedTarget{"Default", c.Default.String(), c.Default})
	}
	for _, r := range c.Routes {
		targets = append(targets, namedTarget{"Routes", r.Host + "=" + r.Target.String(), r.Target})
	}
	for _, nt := range targets {
		if c.Mode == ModeHTTP && nt.t.Scheme == SchemeTCP {
			return &fielderr.Error{Field: nt.field, Value: nt.value, Problem: "tcp:// targets need tcp mode", Accepted: "http://, https://, h2c:// or grpc:// in http mode"}
		}
		if _, err := ParseTarget(nt.t.String()); err != nil {
			return &fielderr.Error{Field: nt.field, Value: nt.value, Err: err}
		}
	}
	return nil
}

// checkALPN checks the protocols offered to clients.
func (c *Config) checkALPN() error {
	for _, p := range c.ALPN {
		if p == "" || len(p) > 255 {
			return &fielderr.Error{Field: "ALPN", Value: p, Problem: "empty or longer than 255 bytes", Accepted: "protocol names of 1 to 255 bytes"}
		}
		if p == ALPNChallenge {
			return &fielderr.Error{Field: "ALPN", Value: p, Problem: "reserved for tls-alpn-01 (set Challenges instead)"}
		}
		if c.Mode == ModeHTTP && p != "h2" && p != "http/1.1" {
			return &fielderr.Error{Field: "ALPN", Value: p, Accepted: "h2 and/or http/1.1 in http mode"}
		}
	}
	return nil
}

// defaultTimeouts fills in zero timeouts and refuses negative ones.
func (c *Config) defaultTimeouts() error {
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"HandshakeTimeout", &c.HandshakeTimeout, DefaultHandshakeTimeout},
		{"ConnectTimeout", &c.ConnectTimeout, DefaultConnectTimeout},
		{"ClientTimeout", &c.ClientTimeout, DefaultClientTimeout},
		{"ServerTimeout", &c.ServerTimeout, DefaultServerTimeout},
		{"HeaderTimeout", &c.HeaderTimeout, DefaultHeaderTimeout},
	} {
		if *d.v < 0 {
			return &fielderr.Error{Field: d.name, Value: d.v.String(), Problem: "negative", Accepted: fmt.Sprintf("a positive duration, or zero for %v", d.def)}
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	return nil
}
