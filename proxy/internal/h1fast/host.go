// Package h1fast is the HTTP/1.1 fast path of http mode. net/http's server,
// ReverseProxy and Transport spend twice what nginx does per keep-alive
// request: a Request and its maps, a response writer, two goroutine hand-offs
// to the Transport's read and write loops. Here one goroutine reads a request
// head, writes it with the X-Forwarded-* headers to a pooled backend
// connection (package backpool), and copies the response back: the syscalls
// of tcp mode plus two small parses (package h1).
//
// It only takes plain requests (h1.ParseRequestHead), for hosts the proxy
// routes to a plain HTTP backend: anything else hands the connection, with
// the bytes read so far, to the proxy's net/http core (Host.Handoff), which
// answers exactly as it would have. The hand-off is one way: later requests
// on that connection stay there. The proxy's differential tests hold the two
// paths to the same answers.
package h1fast

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/tee-ingress/tee-ingress/proxy/internal/backpool"
)

// Host is what the fast path needs from the proxy that accepted its
// connections. Its methods may be called from several goroutines.
type Host interface {
	// Backend is the address a plain request for host (as sent, port
	// included) and path goes to; ok false sends the connection to net/http
	// (a local path, an unrouted host, a target other than plain HTTP).
	Backend(host, path []byte) (addr string, ok bool)
	// Dial opens a new connection to a backend.
	Dial(ctx context.Context, addr string) (net.Conn, error)
	// Quitting reports that shutdown started: responses close their
	// connection and idle connections end.
	Quitting() bool
	// Access is told of each request answered when Config.AccessLog is set.
	Access(method, host, path string, status int, sent int64, took time.Duration, backend, client string)
}

// Client is the client side of one connection.
type Client struct {
	TLS  *tls.Conn // reads, and the half-close alert
	Conn net.Conn  // the socket under TLS: read deadlines, close
	// Write writes to the client through TLS, pushing the write deadline.
	Write func(p []byte) error
	// CloseWrite half-closes the socket once TLS said goodbye.
	CloseWrite func()
	// Handoff gives the connection to net/http; pending are the bytes read
	// from it and not used. The fast path is then done with it.
	Handoff func(pending []byte)
	// IP is the client's address without port ("" if unknown); it goes to
	// X-Forwarded-For and X-Real-IP.
	IP string
}

// Config holds the limits the proxy was configured with; zero values are not
// defaulted here (the proxy's Config did it).
type Config struct {
	MaxHeaderBytes        int
	HeaderTimeout         time.Duration // a request head must arrive within
	ClientTimeout         time.Duration // idle keep-alive, and each body read
	ServerTimeout         time.Duration // backend silence allowed
	KeepUnderscoreHeaders bool          // forward header names with '_'
	AccessLog             bool
}

// Counters are the proxy's counters the fast path adds to.
type Counters struct {
	Fast, Handoffs, ToBackends, ToClients, BackendErrors *atomic.Uint64
}

// Engine serves connections; one per http-mode front. Its backend pool is
// its own; Close empties it.
type Engine struct {
	ctx   context.Context
	cfg   Config
	host  Host
	log   *slog.Logger
	stats Counters
	pool  backpool.Pool
}

// New returns an Engine; log must not be nil, nor any counter. ctx ends
// backend dials in progress (the proxy cancels it when it gives up draining).
func New(ctx context.Context, cfg Config, host Host, log *slog.Logger, stats Counters) *Engine {
	e := &Engine{ctx: ctx, cfg: cfg, host: host, log: log, stats: stats}
	e.pool.Dial = host.Dial
	return e
}

// Close closes the idle backend connections; those in use close when their
// request ends (the proxy is shutting down).
func (e *Engine) Close() { e.pool.Close() }
