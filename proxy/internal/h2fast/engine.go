// Package h2fast is the HTTP/2 path of http mode for connections whose
// server name routes to a plain HTTP backend. net/http's HTTP/2 server and
// ReverseProxy spend a goroutine hand-off, a Request with its maps and a
// flush (a TLS record and a write system call) per response; nginx spends
// about 0.6x that. Here the connection's goroutine reads frames with
// x/net/http2's Framer and HPACK decoder, each stream's request goes as
// HTTP/1.1 over a pooled backend connection (package backpool, parsed by
// package h1) on a goroutine of its own, and one writer per connection sends
// whatever frames the streams produced while it was writing, in one write.
//
// It is the strict part of HTTP/2 that a reverse proxy for plain backends
// needs: flow control both ways, the client's SETTINGS, GOAWAY on shutdown,
// RST_STREAM on a backend failure after the response started, the limits
// of net/http's server (MaxConcurrentStreams, 16 KiB frames, 4 KiB HPACK
// table, the header list limit) and its defences (reset streams count until
// their work ends, a bounded control-frame queue). A stream for a host that
// does not route to a plain backend is answered 421 (RFC 9113 section
// 9.1.2: the client opens a connection of its own for that host, which
// net/http then serves); the proxy's local paths (evidence) run their
// http.Handler. The proxy's h2spec, attack and differential tests run
// against this path and against net/http.
package h2fast

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/tee-ingress/tee-ingress/proxy/internal/backpool"
)

// Host is what the path needs from the proxy that accepted its connections.
// Its methods may be called from several goroutines.
type Host interface {
	// Backend is the address a request for host (the :authority as sent,
	// port included) and path goes to; ok false: not a plain backend.
	Backend(host, path string) (addr string, ok bool)
	// Local is the handler for a request the proxy answers itself (a local
	// path, a host with no route), or nil: the host routes to a backend
	// this path does not speak to (h2c, TLS), and the stream gets 421.
	Local(host, path string) http.Handler
	// Dial opens a new connection to a backend.
	Dial(ctx context.Context, addr string) (net.Conn, error)
	// Quitting reports that shutdown started: connections send GOAWAY and
	// end when their streams have.
	Quitting() bool
	// Access is told of each stream answered when Config.AccessLog is set.
	Access(method, host, path string, status int, sent int64, took time.Duration, backend, client string)
}

// Client is the client side of one connection.
type Client struct {
	Read  io.Reader // the TLS connection: frames are read from it
	Conn  net.Conn  // the socket under TLS: read deadlines, close
	State *tls.ConnectionState
	// Write writes to the client through TLS, pushing the write deadline.
	Write func(p []byte) error
	// CloseWrite says goodbye: TLS close_notify, then the TCP half-close.
	CloseWrite func()
	// IP is the client's address without port ("" if unknown); Addr is
	// host:port, the RemoteAddr local handlers see.
	IP, Addr string
}

// Config holds the limits the proxy was configured with; zero values are not
// defaulted here (the proxy's Config did it).
type Config struct {
	MaxHeaderBytes        int           // the header list limit, as SETTINGS_MAX_HEADER_LIST_SIZE
	HeaderTimeout         time.Duration // the preface and SETTINGS must arrive within
	ClientTimeout         time.Duration // idle connection (no stream open)
	ServerTimeout         time.Duration // backend silence allowed
	KeepUnderscoreHeaders bool          // forward header names with '_'
	AccessLog             bool
}

// Counters are the proxy's counters the path adds to.
type Counters struct {
	Streams, ToBackends, ToClients, BackendErrors *atomic.Uint64
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
// stream ends (the proxy is shutting down).
func (e *Engine) Close() { e.pool.Close() }

// Limits of the path, those of the proxy's net/http HTTP/2 server.
const (
	maxStreams     = 250      // SETTINGS_MAX_CONCURRENT_STREAMS
	maxFrame       = 16 << 10 // SETTINGS_MAX_FRAME_SIZE we read
	maxRespHead    = 64 << 10 // a backend's response head, as the HTTP/1.1 fast path allows
	headerTable    = 4 << 10  // HPACK table we decode with
	streamWindow   = 1 << 20  // what a client may send on one stream before we read it
	connWindow     = 1 << 20  // ... and on the connection (net/http's defaults)
	highWater      = 64 << 10 // frames queued beyond this wait for the writer
	maxQueued      = 1 << 20  // control frames queued beyond this end the connection
	defaultWindow  = 65535    // RFC 9113 6.9.2
	maxWindow      = 1<<31 - 1
	defaultMaxRecv = 16 << 10 // the client's SETTINGS_MAX_FRAME_SIZE until it says
)
