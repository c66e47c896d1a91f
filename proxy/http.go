package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// httpFront is the http-mode half of a Server: an http.Server fed with
// connections whose TLS handshake the Server already did, and one
// ReverseProxy per backend.
type httpFront struct {
	s          *Server
	srv        *http.Server
	queue      *connQueue
	proxies    map[Target]*httputil.ReverseProxy
	transports []*http.Transport
	fast       *fastH1 // nil: HTTP/1.1 connections go to net/http too
	fast2      *fastH2 // nil: HTTP/2 connections go to net/http too

	// fresh holds the connections net/http has read no request on yet,
	// with when they arrived (see closeFresh).
	freshMu sync.Mutex
	fresh   map[net.Conn]time.Time
}

func (s *Server) newHTTPFront() error {
	cfg := &s.cfg
	f := &httpFront{
		s:       s,
		queue:   &connQueue{ch: make(chan net.Conn), done: make(chan struct{})},
		proxies: make(map[Target]*httputil.ReverseProxy),
		fresh:   make(map[net.Conn]time.Time),
	}
	errorLog := slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug)
	var h1, h2c, tlsT *http.Transport
	pool := bytePool{}
	for _, t := range s.router.targets() {
		u := &url.URL{Scheme: "http", Host: t.Addr}
		var tr *http.Transport
		switch t.Scheme {
		case "", SchemeHTTP:
			if h1 == nil {
				h1 = f.newTransport()
			}
			tr = h1
		case SchemeH2C, SchemeGRPC:
			if h2c == nil {
				h2c = f.newTransport()
				var p http.Protocols
				p.SetUnencryptedHTTP2(true)
				h2c.Protocols = &p
			}
			tr = h2c
		case SchemeHTTPS:
			if tlsT == nil {
				tlsT = f.newTransport()
				tlsT.TLSClientConfig = s.backendTLSConfig(Target{})
				tlsT.ForceAttemptHTTP2 = true
			}
			tr = tlsT
			u.Scheme = "https"
		default:
			return errors.New("config: backend " + t.String() + ": tcp:// targets need tcp mode")
		}
		f.proxies[t] = f.newReverseProxy(u, tr, pool, errorLog)
	}
	var protos http.Protocols
	protos.SetHTTP1(slices.Contains(cfg.ALPN, "http/1.1"))
	protos.SetHTTP2(slices.Contains(cfg.ALPN, "h2"))
	f.srv = &http.Server{
		Handler:           f,
		ReadHeaderTimeout: cfg.HeaderTimeout,
		IdleTimeout:       cfg.ClientTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		Protocols:         &protos,
		ErrorLog:          errorLog,
		BaseContext:       func(net.Listener) context.Context { return s.ctx },
		ConnContext:       connContext,
		ConnState:         f.connState,
		// HTTP/2 limits spelled out rather than left to net/http's
		// defaults: frames of the RFC's default 16 KiB (net/http would
		// advertise 1 MiB, so one client could make it buffer that much
		// per frame), 4 KiB HPACK tables both ways, at most 250 streams at
		// once, and a connection whose writes stall for ClientTimeout is
		// closed.
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:      250,
			MaxReadFrameSize:          16 << 10,
			MaxDecoderHeaderTableSize: 4 << 10,
			MaxEncoderHeaderTableSize: 4 << 10,
			WriteByteTimeout:          cfg.ClientTimeout,
		},
	}
	f.startFastPaths(&protos)
	s.http = f
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f.srv.Serve(f.queue)
	}()
	return nil
}

// startFastPaths starts the fast paths the configuration allows.
func (f *httpFront) startFastPaths(protos *http.Protocols) {
	cfg := &f.s.cfg
	if protos.HTTP1() && !cfg.PlainCore {
		f.fast = newFastH1(f)
	}
	if protos.HTTP2() && !cfg.PlainCore && !cfg.PlainHTTP2 {
		f.fast2 = newFastH2(f)
	}
}

// newReverseProxy is the handler for one backend at u, reached through tr.
func (f *httpFront) newReverseProxy(u *url.URL, tr *http.Transport, pool bytePool, errorLog *log.Logger) *httputil.ReverseProxy {
	s := f.s
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host // the app sees the domain the client asked for
			pr.SetXForwarded()
			f.rewriteHeaders(pr)
		},
		Transport: tr,
		ModifyResponse: func(resp *http.Response) error {
			// An upgraded (101) body must stay the backend's
			// io.ReadWriteCloser for ReverseProxy to splice it, so
			// websocket bytes are not counted.
			if resp.StatusCode != http.StatusSwitchingProtocols {
				resp.Body = &countingBody{ReadCloser: resp.Body, n: &s.stats.toClients}
			}
			return nil
		},
		// Zero: ReverseProxy flushes every write of server-sent events and
		// of responses of unknown length (streams, gRPC); others go out
		// whole. -1 would flush headers and body of every response
		// separately, through a timer goroutine.
		FlushInterval: 0,
		BufferPool:    pool,
		ErrorLog:      errorLog,
		ErrorHandler:  f.backendError,
	}
}

func (f *httpFront) newTransport() *http.Transport {
	cfg := &f.s.cfg
	t := &http.Transport{
		Proxy:                 nil, // never an environment proxy: the backends are local
		DialContext:           f.dialBackend,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   cfg.ConnectTimeout,
		ResponseHeaderTimeout: cfg.ServerTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true, // pass Accept-Encoding and bodies through untouched
		WriteBufferSize:       bufSize,
		ReadBufferSize:        bufSize,
	}
	f.transports = append(f.transports, t)
	return t
}

// dialBackend dials for the transports; plain TCP connections do their I/O
// through rawIO (see there).
func (f *httpFront) dialBackend(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := f.s.dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if r := f.s.rawIO(c); r != nil {
		return &rawConn{Conn: c, r: r}, nil
	}
	return c, nil
}

// rawConn is a net.Conn whose reads and writes go through rawIO.
type rawConn struct {
	net.Conn
	r *rawIO
}

func (c *rawConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *rawConn) Write(p []byte) (int, error) { return c.r.Write(p) }

// NetConn is the socket, for the backend pool's idle check.
func (c *rawConn) NetConn() net.Conn { return c.Conn }

// backendTLSConfig is the client configuration for https targets; an empty
// target leaves ServerName to the transport.
func (s *Server) backendTLSConfig(t Target) *tls.Config {
	var c *tls.Config
	if s.cfg.BackendTLS != nil {
		c = s.cfg.BackendTLS.Clone()
	} else {
		c = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if c.ServerName == "" && t.Addr != "" {
		c.ServerName, _, _ = net.SplitHostPort(t.Addr)
	}
	return c
}

// deliver hands a connection whose handshake is done to the http.Server.
func (f *httpFront) deliver(tc net.Conn) {
	select {
	case f.queue.ch <- tc:
	case <-f.queue.done:
		tc.Close()
	}
}

func (f *httpFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := f.s
	s.handlers.add()
	defer s.handlers.done()
	if r.TLS == nil {
		// Handed over by the fast path (prefixConn).
		r.TLS, _ = r.Context().Value(tlsStateKey{}).(*tls.ConnectionState)
	}
	backend := ""
	if s.cfg.AccessLog {
		aw, start := &accessWriter{ResponseWriter: w}, time.Now()
		defer func() {
			s.logAccess(r.Method, r.Host, r.URL.EscapedPath(), aw.status, aw.bytes, time.Since(start), backend, clientHost(r.RemoteAddr))
		}()
		w = aw
	}
	// The root is matched as sent (escaped), as tcp mode and the fast
	// path see it: /%65vidences is the app's, in every mode.
	if s.cfg.Evidence != nil && s.local.match(r.URL.EscapedPath()) {
		s.stats.evidence.Add(1)
		backend = "local"
		s.cfg.Evidence.ServeHTTP(w, r)
		return
	}
	t, ok := f.route(r)
	if !ok {
		s.stats.unrouted.Add(1)
		http.Error(w, "no route for this host", http.StatusMisdirectedRequest)
		return
	}
	backend = t.Addr
	if !prereadChunked(w, r) {
		return
	}
	if r.Header.Get("Upgrade") != "" {
		w = upgradeWriter{w}
	}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &countingBody{ReadCloser: r.Body, n: &s.stats.toBackends}
	}
	f.proxies[t].ServeHTTP(w, r)
}

// rewriteHeaders applies what the fast path does to the headers too: the
// client's address in X-Real-IP (never the client's own), and no field
// names with an underscore unless Config.KeepUnderscoreHeaders.
func (f *httpFront) rewriteHeaders(pr *httputil.ProxyRequest) {
	pr.Out.Header.Del("X-Real-Ip")
	if ip, _, err := net.SplitHostPort(pr.In.RemoteAddr); err == nil {
		pr.Out.Header.Set("X-Real-Ip", ip)
	}
	if f.s.cfg.KeepUnderscoreHeaders {
		return
	}
	for k := range pr.Out.Header {
		if strings.IndexByte(k, '_') >= 0 {
			delete(pr.Out.Header, k)
		}
	}
}

// maxPreread is the largest chunked request body read whole before it is
// forwarded (the fast path buffers bodies up to the same size).
const maxPreread = 64 << 10

// prereadChunked reads up to maxPreread of a chunked HTTP/1.1 request body
// before anything goes to the backend, as nginx buffers request bodies: a
// malformed body found there is answered 400 and closes the connection,
// instead of a 502 after the head was already forwarded. A body that ends
// within the limit is forwarded with a Content-Length; a longer one streams
// on after the bytes read. It reports whether to go on proxying.
func prereadChunked(w http.ResponseWriter, r *http.Request) bool {
	if r.ProtoMajor != 1 || r.ContentLength >= 0 || r.Body == nil || r.Body == http.NoBody || r.Header.Get("Upgrade") != "" {
		return true
	}
	buf := make([]byte, 0, 4<<10)
	for len(buf) <= maxPreread {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			if len(r.Trailer) == 0 {
				r.Body, r.ContentLength, r.TransferEncoding = io.NopCloser(bytes.NewReader(buf)), int64(len(buf)), nil
			} else {
				r.Body = readCloser{bytes.NewReader(buf), r.Body}
			}
			return true
		}
		if err != nil {
			if r.Context().Err() == nil {
				w.Header().Set("Connection", "close")
				http.Error(w, "malformed request body: "+err.Error(), http.StatusBadRequest)
			}
			return false
		}
	}
	r.Body = readCloser{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
	return true
}

// upgradeWriter hands ReverseProxy a hijacked connection that first yields
// the bytes the server had already read past the request head: a client may
// send its first frames in the same write as the Upgrade request, and
// ReverseProxy copies from the bare connection, which would drop them.
type upgradeWriter struct{ http.ResponseWriter }

func (u upgradeWriter) Unwrap() http.ResponseWriter { return u.ResponseWriter }

func (u upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(u.ResponseWriter).Hijack()
	if err != nil || brw.Reader.Buffered() == 0 {
		return c, brw, err
	}
	early, _ := brw.Reader.Peek(brw.Reader.Buffered())
	ec := &earlyConn{Conn: c, pending: bytes.Clone(early)}
	brw.Reader.Reset(ec)
	return ec, brw, nil
}

// earlyConn reads pending, bytes read off the connection earlier, before
// the connection.
type earlyConn struct {
	net.Conn
	pending []byte
}

func (c *earlyConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

type readCloser struct {
	io.Reader
	io.Closer
}

// countingBody counts the bytes read through it into n.
type countingBody struct {
	io.ReadCloser
	n *atomic.Uint64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(uint64(n))
	return n, err
}

// route picks the backend by Host (HTTP/2 clients reuse a connection for every
// name its certificate covers, so SNI alone is not enough), by SNI when there is
// no Host (HTTP/1.0), then the default.
func (f *httpFront) route(r *http.Request) (Target, bool) {
	name := hostOnly(r.Host)
	if name == "" && r.TLS != nil {
		name = r.TLS.ServerName
	}
	return f.s.router.match(name)
}

// hostOnly strips the port from a Host header.
func hostOnly(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		return host
	}
	return h
}

func (f *httpFront) backendError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client went away
	}
	f.s.stats.backendErrors.Add(1)
	f.s.log.Info("backend request failed", "host", r.Host, "path", r.URL.Path, "err", err)
	w.WriteHeader(http.StatusBadGateway)
}

func (f *httpFront) shutdown(ctx context.Context) error {
	f.closeFresh()
	return f.srv.Shutdown(ctx)
}

func (f *httpFront) connState(c net.Conn, st http.ConnState) {
	f.freshMu.Lock()
	defer f.freshMu.Unlock()
	if st == http.StateNew {
		f.fresh[c] = time.Now()
	} else {
		delete(f.fresh, c)
	}
}

// freshGrace is how long a connection that has sent no request is left to
// send one after Shutdown starts, counted from its arrival.
const freshGrace = 500 * time.Millisecond

// closeFresh closes, at Shutdown, the connections on which no request has
// come (an h2 client that opened a connection and said nothing): net/http
// counts them idle only after five seconds, so one such client held the
// drain that long. A connection younger than freshGrace gets the rest of
// it: its first request may be on its way.
func (f *httpFront) closeFresh() {
	f.freshMu.Lock()
	defer f.freshMu.Unlock()
	now := time.Now()
	for c, since := range f.fresh {
		time.AfterFunc(max(freshGrace-now.Sub(since), 0), func() {
			f.freshMu.Lock()
			_, still := f.fresh[c]
			f.freshMu.Unlock()
			if still {
				c.Close()
			}
		})
	}
}

func (f *httpFront) closeIdle() {
	if f.fast != nil {
		f.fast.Close()
	}
	if f.fast2 != nil {
		f.fast2.Close()
	}
	for _, t := range f.transports {
		t.CloseIdleConnections()
	}
}

// connQueue is the net.Listener the http.Server accepts from.
type connQueue struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4zero} }

// bytePool lends ReverseProxy its copy buffers.
type bytePool struct{}

func (bytePool) Get() []byte  { return *getBuf() }
func (bytePool) Put(b []byte) { putBuf(&b) }
