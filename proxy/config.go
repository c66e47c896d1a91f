package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
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

	// Logger receives connection and error logs. Nil: discard.
	Logger *slog.Logger
}

// withDefaults validates c and returns a copy with zero fields defaulted. Errors
// name the field to change.
func (c Config) withDefaults() (Config, error) {
	if c.Certs == nil {
		return c, errors.New("config: Certs is nil: a certificate source is required")
	}
	switch c.Mode {
	case ModeTCP, ModeHTTP:
	default:
		return c, fmt.Errorf("config: Mode %d: want ModeTCP or ModeHTTP", int(c.Mode))
	}
	if c.Default.IsZero() && len(c.Routes) == 0 {
		return c, errors.New("config: no backend: set Default (TARGET_ENDPOINT) or Routes (ROUTING_MAP)")
	}
	for _, r := range c.LocalPaths {
		if err := checkLocalRoot(r); err != nil {
			return c, fmt.Errorf("config: LocalPaths: %w", err)
		}
	}
	if len(c.LocalPaths) > 0 && c.Evidence == nil {
		return c, errors.New("config: LocalPaths set without Evidence: nothing would answer them")
	}
	type namedTarget struct {
		field string
		t     Target
	}
	var targets []namedTarget
	if !c.Default.IsZero() {
		targets = append(targets, namedTarget{"Default (TARGET_ENDPOINT)", c.Default})
	}
	for _, r := range c.Routes {
		targets = append(targets, namedTarget{fmt.Sprintf("Routes (ROUTING_MAP) entry %s", r.Host), r.Target})
	}
	for _, nt := range targets {
		if c.Mode == ModeHTTP && nt.t.Scheme == SchemeTCP {
			return c, fmt.Errorf("config: %s: %s: tcp:// targets need tcp mode; in http mode use http://, https://, h2c:// or grpc://", nt.field, nt.t)
		}
		if _, err := ParseTarget(nt.t.String()); err != nil {
			return c, fmt.Errorf("config: %s: %w", nt.field, err)
		}
	}
	if c.Mode == ModeHTTP && c.ProxyProtocol {
		return c, errors.New("config: ProxyProtocol needs tcp mode: http mode pools backend connections and sends X-Forwarded-For instead")
	}
	for _, p := range c.ALPN {
		if p == "" || len(p) > 255 {
			return c, fmt.Errorf("config: ALPN protocol %q: want 1 to 255 bytes", p)
		}
		if p == ALPNChallenge {
			return c, fmt.Errorf("config: ALPN protocol %q is reserved for tls-alpn-01 (set Challenges instead)", p)
		}
		if c.Mode == ModeHTTP && p != "h2" && p != "http/1.1" {
			return c, fmt.Errorf("config: ALPN protocol %q in http mode: want h2 and/or http/1.1", p)
		}
	}
	if c.Mode == ModeHTTP && len(c.ALPN) == 0 {
		c.ALPN = []string{"h2", "http/1.1"}
	}
	c.ALPN = slices.Clone(c.ALPN)
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
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
			return c, fmt.Errorf("config: %s %v is negative: want a positive duration, or zero for %v", d.name, *d.v, d.def)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.MaxHeaderBytes < 0 {
		return c, fmt.Errorf("config: MaxHeaderBytes %d is negative: want a positive size, or zero for %d", c.MaxHeaderBytes, DefaultMaxHeaderBytes)
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}
