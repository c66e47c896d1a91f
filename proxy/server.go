package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/tee-ingress/tee-ingress/internal/fielderr"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("proxy: server closed")

// Stats are counters since New, for export as metrics.
type Stats struct {
	Accepted         uint64 // TCP connections accepted
	Refused          uint64 // closed at once because MaxConns connections were open
	HandshakeErrors  uint64 // failed or timed-out TLS handshakes (garbage, slowloris, unknown ALPN)
	Challenges       uint64 // tls-alpn-01 handshakes answered
	Unrouted         uint64 // connections or requests for a name with no route and no default
	BackendErrors    uint64 // backend dials that failed, backends that reset, 502 responses
	EvidenceRequests uint64 // requests answered by the evidence handler
	Active           int64  // client connections open now
	// Bytes forwarded, counted as they are written: the decrypted stream in
	// tcp mode; request and response bodies in http mode (headers are not
	// counted). Evidence is not counted.
	BytesToBackends uint64
	BytesToClients  uint64
	// ProxyHeaderRefused counts connections closed for their inbound PROXY
	// protocol header (Config.ProxyProtocolIn): missing, malformed, late, or
	// from a peer not in ProxyProtocolFrom.
	ProxyHeaderRefused uint64
}

type counters struct {
	accepted, refused, handshakeErrors, challenges, unrouted, backendErrors, evidence atomic.Uint64
	active                                                                            atomic.Int64
	toBackends, toClients                                                             atomic.Uint64
	proxyHeaderRefused                                                                atomic.Uint64
	// The http fast path: requests it answered, connections it handed to
	// net/http (for tests and benchmarks; not part of Stats).
	h1Fast, h1Handoffs atomic.Uint64
	h2Streams          atomic.Uint64 // streams the HTTP/2 fast path served
}

// Server terminates TLS and forwards to backends. Create it with New, run it with
// Serve, stop it with Shutdown.
type Server struct {
	cfg     Config
	local   localPaths // the paths cfg.Evidence answers
	log     *slog.Logger
	router  *router
	tlsConf *tls.Config
	dialer  net.Dialer
	http    *httpFront // nil in tcp mode
	watch   *watcher   // nil in http mode or where there is no epoll
	stats   counters

	// ctx is cancelled when Shutdown gives up waiting: it ends evidence
	// requests and backend dials still running.
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*trackedConn]struct{}
	closing   atomic.Bool   // Shutdown started; set under mu, read without it on hot paths
	quit      chan struct{} // closed when Shutdown starts
	drained   chan struct{} // closed when conns is empty after Shutdown started
	drainOnce sync.Once
	closeOnce sync.Once
	handlers  handlerCount // http-mode handlers running
	wg        sync.WaitGroup
}

// rawIO is c's raw socket I/O, or nil: on the plain core, and where c is not
// a socket it can drive (then I/O goes through the net.Conn).
func (s *Server) rawIO(c net.Conn) *rawIO {
	if s.cfg.PlainCore {
		return nil
	}
	return newRawIO(c)
}

// New validates cfg and returns a Server. A bad value is a *fielderr.Error
// naming the Config field to change.
// Call Shutdown to release what it holds, even if Serve was never called.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	rt, err := newRouter(cfg.Routes, cfg.Default)
	if err != nil {
		return nil, &fielderr.Error{Field: "Routes", Err: err}
	}
	local := defaultLocal
	if len(cfg.LocalPaths) > 0 {
		local = newLocalPaths(cfg.LocalPaths)
	}
	s := &Server{
		cfg:    cfg,
		log:    cfg.Logger,
		router: rt,
		local:  local,
		// No TCP keep-alive to backends: they are next to us, and the idle
		// timeouts close what is not used.
		dialer:    net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: -1},
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*trackedConn]struct{}),
		quit:      make(chan struct{}),
		drained:   make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.tlsConf = &tls.Config{
		MinVersion:         tls.VersionTLS12,
		GetCertificate:     cfg.Certs.GetCertificate,
		GetConfigForClient: s.configForClient,
		NextProtos:         cfg.ALPN,
		// Full-size records from the start, as HAProxy sends them: fewer
		// records and syscalls for bulk transfers.
		DynamicRecordSizingDisabled: true,
	}
	if cfg.Mode == ModeHTTP {
		if err := s.newHTTPFront(); err != nil {
			return nil, err
		}
	} else if cfg.PlainCore {
		// No watcher: idle connections keep their goroutines.
	} else if w, err := newWatcher(); err == nil {
		s.watch = w
	} else {
		s.log.Debug("idle connections will keep their goroutines", "err", err)
	}
	return s, nil
}

// configForClient answers tls-alpn-01 ClientHellos with the challenge
// certificate and leaves all others to the base configuration.
func (s *Server) configForClient(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	if !slices.Contains(hello.SupportedProtos, ALPNChallenge) {
		return nil, nil
	}
	if s.cfg.Challenges != nil {
		if cert, ok := s.cfg.Challenges.ChallengeCertificate(hello.ServerName); ok {
			return &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{*cert},
				NextProtos:   []string{ALPNChallenge},
			}, nil
		}
	}
	return nil, fmt.Errorf("no tls-alpn-01 challenge pending for %q", hello.ServerName)
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Accepted:         s.stats.accepted.Load(),
		Refused:          s.stats.refused.Load(),
		HandshakeErrors:  s.stats.handshakeErrors.Load(),
		Challenges:       s.stats.challenges.Load(),
		Unrouted:         s.stats.unrouted.Load(),
		BackendErrors:    s.stats.backendErrors.Load(),
		EvidenceRequests: s.stats.evidence.Load(),
		Active:           s.stats.active.Load(),
		BytesToBackends:  s.stats.toBackends.Load(),
		BytesToClients:   s.stats.toClients.Load(),

		ProxyHeaderRefused: s.stats.proxyHeaderRefused.Load(),
	}
}

// Serve accepts connections on ln until Shutdown, then returns ErrServerClosed.
// It may be called for several listeners at once. ln is closed on return.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()

	var backoff time.Duration
	for {
		raw, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			var te interface{ Temporary() bool }
			if !errors.As(err, &te) || !te.Temporary() {
				return fmt.Errorf("accepting connections on %s: %w", ln.Addr(), err)
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed, retrying", "err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-s.quit:
				t.Stop()
				return ErrServerClosed
			}
			continue
		}
		backoff = 0
		s.stats.accepted.Add(1)
		c := s.track(raw)
		if c == nil {
			raw.Close()
			continue
		}
		s.wg.Add(1)
		go s.handle(c)
	}
}

// track registers a new client connection, or returns nil when MaxConns
// connections are open or the server is shutting down.
func (s *Server) track(raw net.Conn) *trackedConn {
	if max := int64(s.cfg.MaxConns); max > 0 {
		for {
			n := s.stats.active.Load()
			if n >= max {
				s.stats.refused.Add(1)
				s.log.Debug("connection refused: MaxConns reached", "remote", raw.RemoteAddr().String(), "max_conns", max)
				return nil
			}
			if s.stats.active.CompareAndSwap(n, n+1) {
				break
			}
		}
	} else {
		s.stats.active.Add(1)
	}
	c := &trackedConn{Conn: raw, s: s, raw: s.rawIO(raw)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		s.stats.active.Add(-1)
		return nil
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return c
}

func (s *Server) forget(c *trackedConn) {
	s.stats.active.Add(-1)
	s.mu.Lock()
	delete(s.conns, c)
	empty := s.closing.Load() && len(s.conns) == 0
	s.mu.Unlock()
	if empty {
		s.drainOnce.Do(func() { close(s.drained) })
	}
	s.wg.Done()
}

// trackedConn is a client connection counted against MaxConns until closed.
// It can gather the records of one tls.Conn.Write into a single write.
type trackedConn struct {
	net.Conn
	s    *Server
	once sync.Once

	raw   *rawIO // nil when Conn is not a TCP socket
	abort func() // under s.mu: ends the connection's session (tcp mode, http fast path)
	kick  func() // under s.mu: tells an http fast-path connection that Shutdown started

	wmu    sync.Mutex
	gather *[]byte // non-nil while gathering

	// client is the address an inbound PROXY header gave (nil: the peer's).
	client net.Addr
}

// RemoteAddr is the client's address: the one the inbound PROXY header
// carried, else the peer's.
func (c *trackedConn) RemoteAddr() net.Addr {
	if c.client != nil {
		return c.client
	}
	return c.Conn.RemoteAddr()
}

func (c *trackedConn) Read(p []byte) (int, error) {
	if c.raw != nil {
		return c.raw.Read(p)
	}
	return c.Conn.Read(p)
}

func (c *trackedConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	if c.gather != nil {
		*c.gather = append(*c.gather, p...)
		c.wmu.Unlock()
		return len(p), nil
	}
	c.wmu.Unlock()
	return c.write(p)
}

func (c *trackedConn) write(p []byte) (int, error) {
	if c.raw != nil {
		return c.raw.Write(p)
	}
	return c.Conn.Write(p)
}

// startGather makes writes accumulate until flushGather. Writes from other
// goroutines (crypto/tls sends alerts under its own lock) are gathered too, in
// order, and sent by flushGather.
func (c *trackedConn) startGather() {
	b := wirePool.Get().(*[]byte)
	*b = (*b)[:0]
	c.wmu.Lock()
	c.gather = b
	c.wmu.Unlock()
}

func (c *trackedConn) flushGather() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := c.gather
	c.gather = nil
	_, err := c.write(*b)
	if cap(*b) <= wireBufSize {
		wirePool.Put(b)
	}
	return err
}

// writeTLS writes p through tc, the TLS connection over c, and reports how
// many bytes of p were sent. The write deadline is pushed to timeout at most
// every timeout/16 (each push moves a runtime timer; *lastWD holds when). More
// than one record's worth is gathered and sent in one system call: crypto/tls
// would write each record with its own.
func (c *trackedConn) writeTLS(tc *tls.Conn, p []byte, timeout time.Duration, lastWD *int64) (int, error) {
	if now := monotime(); now-*lastWD > int64(timeout/16) {
		c.SetWriteDeadline(time.Now().Add(timeout))
		*lastWD = now
	}
	if len(p) <= bufSize {
		return tc.Write(p)
	}
	c.startGather()
	n, err := tc.Write(p)
	if ferr := c.flushGather(); err == nil {
		err = ferr
	}
	if err != nil {
		return 0, err
	}
	return n, nil
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.s.forget(c) })
	return err
}

// closeWrite half-closes the TCP connection, if it is one.
func (c *trackedConn) closeWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (s *Server) handle(c *trackedConn) {
	defer s.wg.Done()
	c.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	if s.cfg.ProxyProtocolIn {
		if err := s.readProxyHeader(c); err != nil {
			s.stats.proxyHeaderRefused.Add(1)
			s.log.Debug("connection refused: inbound PROXY protocol header", "peer", c.Conn.RemoteAddr().String(), "err", err)
			c.Close()
			return
		}
	}
	tc := tls.Server(c, s.tlsConf)
	if err := tc.Handshake(); err != nil {
		s.stats.handshakeErrors.Add(1)
		s.log.Debug("tls handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	c.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	if st.NegotiatedProtocol == ALPNChallenge {
		s.stats.challenges.Add(1)
		s.log.Info("answered tls-alpn-01 challenge", "domain", st.ServerName, "remote", c.RemoteAddr().String())
		tc.Close()
		return
	}
	if s.http != nil {
		switch {
		case st.NegotiatedProtocol != "h2" && s.http.fast != nil:
			s.http.serveH1(c, tc, &st)
		case st.NegotiatedProtocol == "h2" && s.http.fast2 != nil && s.http.plainH2(st.ServerName):
			s.http.serveH2(c, tc, &st)
		default:
			s.http.deliver(tc)
		}
		return
	}
	s.serveTCP(c, tc, &st)
}

// Shutdown stops accepting connections, lets open ones finish until ctx is done,
// then closes those left. It returns once every goroutine the Server started has
// ended: nil if all connections finished in time, else ctx's error. In http mode
// idle keep-alive connections are closed at once and HTTP/2 clients get GOAWAY;
// in tcp mode a connection ends when both sides close it.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	first := !s.closing.Swap(true)
	lns := make([]net.Listener, 0, len(s.listeners))
	for ln := range s.listeners {
		lns = append(lns, ln)
	}
	open := len(s.conns)
	empty := open == 0
	s.mu.Unlock()
	if first && !empty {
		s.log.Info("draining: waiting for open connections to finish", "open", open)
	}
	if empty {
		s.drainOnce.Do(func() { close(s.drained) })
	}
	if first {
		close(s.quit)
	}
	for _, ln := range lns {
		ln.Close()
	}

	var err error
	if s.http != nil {
		s.kickIdle()
		err = s.http.shutdown(ctx)
	}
	select {
	case <-s.drained:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		s.cancel()
		s.closeAll()
	}
	s.wg.Wait()
	s.waitHandlers()
	s.cancel()
	if s.http != nil {
		s.http.closeIdle()
	}
	s.closeOnce.Do(func() {
		if s.watch != nil {
			s.watch.Close()
		}
	})
	return err
}

// kickIdle wakes the http-mode connections waiting for a request, so that
// they see the server is closing.
func (s *Server) kickIdle() {
	s.mu.Lock()
	var kicks []func()
	for c := range s.conns {
		if c.kick != nil {
			kicks = append(kicks, c.kick)
		}
	}
	s.mu.Unlock()
	for _, kick := range kicks {
		kick()
	}
}

// closeAll closes every connection still open: the drain deadline passed.
func (s *Server) closeAll() {
	s.mu.Lock()
	left := make([]func() error, 0, len(s.conns))
	for c := range s.conns {
		if c.abort != nil {
			abort := c.abort
			left = append(left, func() error { abort(); return nil })
		} else {
			left = append(left, c.Close)
		}
	}
	s.mu.Unlock()
	if len(left) > 0 {
		s.log.Warn("drain deadline reached, closing connections", "open", len(left))
	}
	for _, close := range left {
		close()
	}
}

// waitHandlers waits, at most five seconds, for the handlers of hijacked
// connections (websockets): they end once their connection is closed, and
// nothing we started may outlive Shutdown.
func (s *Server) waitHandlers() {
	if n := s.handlers.wait(5 * time.Second); n > 0 {
		s.log.Warn("http handlers still running after their connections were closed", "handlers", n)
	}
}

// handlerCount counts running handlers; wait is woken by the last one to
// end instead of polling.
type handlerCount struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed when n drops to 0; made by a waiter
}

func (h *handlerCount) add() {
	h.mu.Lock()
	h.n++
	h.mu.Unlock()
}

func (h *handlerCount) done() {
	h.mu.Lock()
	if h.n--; h.n == 0 && h.zero != nil {
		close(h.zero)
		h.zero = nil
	}
	h.mu.Unlock()
}

// wait returns once no handler runs, or after d, with how many still run.
func (h *handlerCount) wait(d time.Duration) int {
	h.mu.Lock()
	if h.n == 0 {
		h.mu.Unlock()
		return 0
	}
	if h.zero == nil {
		h.zero = make(chan struct{})
	}
	zero := h.zero
	h.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-zero:
	case <-t.C:
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}
