package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"time"
)

// The core's side of the HTTP/1.1 fast path (proxy/internal/h1fast, reached
// through fastpath.go): where a plain request goes, and how a connection the
// fast path does not take reaches net/http.

// fastHost is the fast path's view of an http-mode front (h1fast.Host).
type fastHost struct{ f *httpFront }

// Backend sends local paths, unrouted hosts and targets other than plain
// HTTP to net/http: it answers 421, the evidence handler, or speaks h2c or
// TLS to the backend.
func (h fastHost) Backend(host, path []byte) (string, bool) {
	return h.f.plainBackend(string(host), string(path))
}

func (f *httpFront) plainBackend(host, path string) (string, bool) {
	s := f.s
	if s.cfg.Evidence != nil && s.local.match(path) {
		return "", false
	}
	target, ok := s.router.match(hostOnly(host))
	if !ok || target.Scheme != "" && target.Scheme != SchemeHTTP {
		return "", false
	}
	return target.Addr, true
}

func (h fastHost) Dial(ctx context.Context, addr string) (net.Conn, error) {
	return h.f.dialBackend(ctx, "tcp", addr)
}

func (h fastHost) Quitting() bool { return h.f.s.closing.Load() }

func (h fastHost) Access(method, host, path string, status int, sent int64, took time.Duration, backend, client string) {
	h.f.s.logAccess(method, host, path, status, sent, took, backend, client)
}

// fastH2Host is the HTTP/2 fast path's view of the front (h2fast.Host).
type fastH2Host struct{ fastHost }

func (h fastH2Host) Backend(host, path string) (string, bool) {
	return h.f.plainBackend(host, path)
}

// Local sends what net/http's handler answers itself (a local path, a host
// with no route) to it; a host routed to a backend the fast path does not
// speak to gets nil (421: the client opens a connection for it).
func (h fastH2Host) Local(host, path string) http.Handler {
	s := h.f.s
	if s.cfg.Evidence != nil && s.local.match(path) {
		return h.f
	}
	if _, ok := s.router.match(hostOnly(host)); !ok {
		return h.f
	}
	return nil
}

// plainH2 reports whether an h2 connection for server name sni goes to the
// HTTP/2 fast path: its host routes to a plain HTTP backend.
func (f *httpFront) plainH2(sni string) bool {
	t, ok := f.s.router.match(sni)
	return ok && (t.Scheme == "" || t.Scheme == SchemeHTTP)
}

// handoff gives a connection the fast path read pending from, and does not
// take, to the http.Server.
func (f *httpFront) handoff(c *trackedConn, tc *tls.Conn, st *tls.ConnectionState, pending []byte) {
	f.s.mu.Lock()
	c.abort, c.kick = nil, nil
	f.s.mu.Unlock()
	f.deliver(&prefixConn{earlyConn: earlyConn{Conn: tc, pending: pending}, state: st})
}

// prefixConn is a handed-off connection: the bytes the fast path read, then
// the rest. net/http sees no *tls.Conn, so the TLS state travels in the
// connection's context (ServeHTTP puts it back into Request.TLS).
type prefixConn struct {
	earlyConn
	state *tls.ConnectionState
}

type tlsStateKey struct{}

// connContext is the http.Server's ConnContext.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if pc, ok := c.(*prefixConn); ok {
		return context.WithValue(ctx, tlsStateKey{}, pc.state)
	}
	return ctx
}
