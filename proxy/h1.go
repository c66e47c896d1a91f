package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// The HTTP/1.1 fast path of http mode. net/http's server, ReverseProxy and
// Transport spend twice what nginx does per keep-alive request: a Request and
// its maps, a response writer, two goroutine hand-offs to the Transport's
// read and write loops. Here one goroutine reads a request head, writes it
// with our X-Forwarded-* headers to a pooled backend connection, and copies
// the response back: the syscalls of tcp mode plus two small parses.
//
// It only takes plain requests (parseRequestHead): anything else, and local
// paths, unrouted hosts and targets other than plain HTTP, hand the connection
// (with the bytes read so far) to the http.Server, which answers exactly as
// before. The hand-off is one way: later requests on that connection stay
// there.

const (
	// h1InitialBuf is a connection's request buffer; it grows for larger heads
	// and bodies up to MaxHeaderBytes + maxFastBody.
	h1InitialBuf = 4 << 10
	// maxFastBody is the largest request body the fast path buffers (it sends
	// a request only once the whole of it is here, so a backend that answers
	// early cannot leave us blocked writing, and a stale pooled connection
	// can be retried). Larger bodies go to net/http, which streams them.
	maxFastBody = 64 << 10
	// backIdleTimeout and maxIdlePerBackend bound the pooled backend
	// connections, as the Transport's IdleConnTimeout and
	// MaxIdleConnsPerHost did.
	backIdleTimeout   = 90 * time.Second
	maxIdlePerBackend = 256
	// maxResponseHead bounds a backend's response head.
	maxResponseHead = backBufSize
)

// h1Conn is one client connection on the fast path.
type h1Conn struct {
	s        *Server
	f        *httpFront
	c        *trackedConn
	tc       *tls.Conn
	st       *tls.ConnectionState
	clientIP string

	in   []byte // in[r:w] is read and not yet used
	r, w int

	reqHdrs, respHdrs []h1Header

	idleSet  int64 // monotime when the idle read deadline was last pushed
	clientWD int64

	// What the access log says of the request in flight: the status sent
	// (0: none) and the body bytes that reached the client.
	status int
	sent   int64

	mu      sync.Mutex
	back    *backConn // the backend connection of the request in flight
	aborted bool
}

// errNotPlain: the request is outside the fast path's subset.
var errNotPlain = errors.New("not a plain request")

// serveH1 runs on the connection's goroutine until the connection ends or is
// handed to the http.Server.
func (f *httpFront) serveH1(c *trackedConn, tc *tls.Conn, st *tls.ConnectionState) {
	h := &h1Conn{s: f.s, f: f, c: c, tc: tc, st: st, idleSet: -1 << 62, clientWD: -1 << 62}
	if tcp, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		h.clientIP = tcp.IP.String()
	} else if host, _, err := net.SplitHostPort(c.RemoteAddr().String()); err == nil {
		h.clientIP = host
	}
	f.s.mu.Lock()
	c.abort, c.kick = h.abort, h.kick
	f.s.mu.Unlock()
	// As net/http does for its connections: a bug reached by one client's
	// bytes ends that connection, logged with its stack, not the process.
	defer func() {
		if r := recover(); r != nil {
			buf := make([]byte, 64<<10)
			buf = buf[:runtime.Stack(buf, false)]
			h.s.log.Error("panic serving an HTTP/1.1 connection", "remote", c.RemoteAddr().String(), "panic", fmt.Sprint(r), "stack", string(buf))
			h.abort()
		}
	}()
	h.in = make([]byte, h1InitialBuf)
	for {
		n, err := h.readHead()
		if err == errNotPlain {
			h.handoff()
			return
		}
		if err != nil {
			h.closeClient()
			return
		}
		keep, err := h.serveOne(n)
		if err == errNotPlain {
			h.handoff()
			return
		}
		if !keep {
			h.closeClient()
			return
		}
	}
}

// quitting says whether a response must close the connection because
// Shutdown started. The server's flag, not the kick, decides: it is set
// before any connection is kicked, so a response written while Shutdown is
// still kicking others closes too.
func (h *h1Conn) quitting() bool { return h.s.closing.Load() }

// kick is called by Shutdown, after quitting became true: an idle connection
// wakes from its read and closes now, a busy one closes after its response.
func (h *h1Conn) kick() { h.c.SetReadDeadline(time.Unix(1, 0)) }

// abort closes both sides at once (the drain deadline passed).
func (h *h1Conn) abort() {
	h.mu.Lock()
	h.aborted = true
	b := h.back
	h.mu.Unlock()
	h.c.Close()
	if b != nil {
		b.Close()
	}
}

func (h *h1Conn) closeClient() {
	h.tc.CloseWrite()
	h.c.closeWrite()
	h.c.Close()
}

// handoff gives the connection and what was read of it to the http.Server.
func (h *h1Conn) handoff() {
	h.s.stats.h1Handoffs.Add(1)
	h.s.mu.Lock()
	h.c.abort, h.c.kick = nil, nil
	h.s.mu.Unlock()
	h.c.SetReadDeadline(time.Time{})
	pc := &prefixConn{earlyConn: earlyConn{Conn: h.tc}, state: h.st}
	if h.w > h.r {
		pc.pending = append([]byte(nil), h.in[h.r:h.w]...)
	}
	h.f.deliver(pc)
}

// readHead reads until in[r:] starts with a complete request head and
// returns its length. errNotPlain: too long for us (net/http answers 431).
func (h *h1Conn) readHead() (int, error) {
	if h.r == h.w {
		h.r, h.w = 0, 0
		// What one large request grew is not kept by an idle connection.
		if len(h.in) > 4*h1InitialBuf {
			h.in = make([]byte, h1InitialBuf)
		}
		if cap(h.reqHdrs) > 128 {
			h.reqHdrs = nil
		}
		if cap(h.respHdrs) > 128 {
			h.respHdrs = nil
		}
	} else if h.r > 0 {
		h.w = copy(h.in, h.in[h.r:h.w])
		h.r = 0
	}
	headerDeadline, kicked := false, false
	for {
		if h.w > h.r {
			if n := headEnd(h.in[h.r:h.w]); n >= 0 {
				if headerDeadline {
					h.idleSet = -1 << 62 // the idle deadline must be set again
				}
				return n, nil
			}
			if h.w-h.r >= h.s.cfg.MaxHeaderBytes {
				return 0, errNotPlain
			}
			if !headerDeadline {
				headerDeadline = true
				h.c.SetReadDeadline(time.Now().Add(h.s.cfg.HeaderTimeout))
			}
		} else {
			h.pushIdleDeadline()
			if h.quitting() {
				return 0, net.ErrClosed
			}
		}
		if h.w == len(h.in) {
			h.grow(h.w + 1)
		}
		m, err := h.tc.Read(h.in[h.w:])
		h.w += m
		if err != nil && m == 0 {
			if isTimeout(err) && h.quitting() && h.w > h.r && !kicked {
				// Shutdown cut into a head being read: let it arrive.
				kicked = true
				h.c.SetReadDeadline(time.Now().Add(h.s.cfg.HeaderTimeout))
				continue
			}
			return 0, err
		}
	}
}

// pushIdleDeadline sets the keep-alive read deadline, at most every
// ClientTimeout/16 (each push moves a runtime timer).
func (h *h1Conn) pushIdleDeadline() {
	if now := monotime(); now-h.idleSet > int64(h.s.cfg.ClientTimeout/16) {
		h.c.SetReadDeadline(time.Now().Add(h.s.cfg.ClientTimeout))
		h.idleSet = now
	}
}

// grow makes room for at least n bytes in in.
func (h *h1Conn) grow(n int) {
	if n <= len(h.in) {
		return
	}
	b := make([]byte, max(n, 2*len(h.in)))
	copy(b, h.in[:h.w])
	h.in = b
}

// serveOne answers the request whose head is in[r:r+n]. keep reports
// whether the connection stays open for another request.
func (h *h1Conn) serveOne(n int) (keep bool, err error) {
	s := h.s
	req, ok := parseRequestHead(h.in[h.r:h.r+n], h.reqHdrs)
	h.reqHdrs = req.headers[:0]
	if req.reject != "" {
		h.badRequest(req.reject)
		return false, nil
	}
	if !ok || req.contentLength > maxFastBody || n > s.cfg.MaxHeaderBytes {
		return false, errNotPlain
	}
	if s.cfg.Evidence != nil && s.local.match(string(req.path)) {
		return false, errNotPlain
	}
	target, ok := s.router.match(hostOnly(string(req.host)))
	if !ok || target.Scheme != "" && target.Scheme != SchemeHTTP {
		return false, errNotPlain // net/http answers 421, or speaks h2c/TLS to the backend
	}
	// The whole body, before anything is sent.
	total := n + int(max(req.contentLength, 0))
	if h.w-h.r < total {
		h.grow(h.r + total)
		h.c.SetReadDeadline(time.Now().Add(h.s.cfg.ClientTimeout))
		h.idleSet = -1 << 62
		for h.w-h.r < total {
			m, err := h.tc.Read(h.in[h.w : h.r+total])
			h.w += m
			if err != nil && m == 0 {
				return false, err
			}
		}
	}
	body := h.in[h.r+n : h.r+total]
	h.r += total

	out := wirePool.Get().(*[]byte)
	defer func() {
		if cap(*out) <= wireBufSize {
			wirePool.Put(out)
		}
	}()
	b := (*out)[:0]
	b = append(b, req.method...)
	b = append(b, ' ')
	b = append(b, req.target...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, req.host...)
	b = append(b, "\r\n"...)
	keepUnderscores := s.cfg.KeepUnderscoreHeaders
	for _, hd := range req.headers {
		if !hd.drop && (keepUnderscores || bytes.IndexByte(hd.name, '_') < 0) {
			b = appendHeader(b, hd)
		}
	}
	if h.clientIP != "" {
		b = append(b, "X-Forwarded-For: "...)
		b = append(b, h.clientIP...)
		b = append(b, "\r\nX-Real-IP: "...)
		b = append(b, h.clientIP...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "X-Forwarded-Host: "...)
	b = append(b, req.host...)
	b = append(b, "\r\nX-Forwarded-Proto: https\r\n\r\n"...)
	b = append(b, body...)
	*out = b

	s.stats.h1Fast.Add(1)
	var start time.Time
	if s.cfg.AccessLog {
		start, h.status, h.sent = time.Now(), 0, 0
	}
	keep, err = h.roundTrip(&req, target, b, len(body))
	if s.cfg.AccessLog {
		s.logAccess(string(req.method), string(req.host), string(req.path), h.status, h.sent, time.Since(start), target.Addr, h.clientIP)
	}
	return keep && !req.close, err
}

func appendHeader(b []byte, hd h1Header) []byte {
	b = append(b, hd.name...)
	b = append(b, ": "...)
	b = append(b, hd.value...)
	return append(b, "\r\n"...)
}

// roundTrip sends the request to the backend and the response to the client.
// A pooled connection the backend closed while idle is retried once on a
// new one (the request went nowhere: the backend sent nothing back).
func (h *h1Conn) roundTrip(req *h1Request, target Target, wire []byte, bodyLen int) (bool, error) {
	s := h.s
	rb := getBackBuf()
	defer putBackBuf(rb)
	for attempt := 0; ; attempt++ {
		bc, reused, err := h.f.pool.get(h.f, target.Addr)
		if err != nil {
			return h.badGateway(req, "dialling the backend: %w", err)
		}
		h.mu.Lock()
		if h.aborted {
			h.mu.Unlock()
			bc.Close()
			return false, net.ErrClosed
		}
		h.back = bc
		h.mu.Unlock()
		keep, sent, err := h.exchange(req, bc, wire, *rb)
		h.mu.Lock()
		h.back = nil
		h.mu.Unlock()
		if err == nil {
			s.stats.toBackends.Add(uint64(bodyLen))
			return keep, nil
		}
		bc.Close()
		if errors.Is(err, errClientWrite) {
			return false, nil // the client went away; not the backend's fault
		}
		if sent {
			// Part of the response reached the client: all we can do is
			// end the connection.
			s.stats.backendErrors.Add(1)
			s.log.Info("backend response failed", "host", string(req.host), "path", string(req.path), "err", err)
			return false, nil
		}
		if reused && attempt == 0 && isStale(err) {
			continue
		}
		return h.badGateway(req, "%w", err)
	}
}

// isStale: what a pooled connection the backend closed gives on first use.
func isStale(err error) bool { return errors.Is(err, errNoResponse) }

var (
	errNoResponse  = errors.New("the backend closed the connection without a response")
	errClientWrite = errors.New("writing to the client failed")
)

// exchange does one request on bc. sent reports whether anything went to the
// client (then nothing can be retried or answered with 502).
func (h *h1Conn) exchange(req *h1Request, bc *backConn, wire, rb []byte) (keep, sent bool, err error) {
	s := h.s
	bc.SetWriteDeadline(time.Now().Add(s.cfg.ServerTimeout))
	if _, err := bc.Write(wire); err != nil {
		if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
			err = fmt.Errorf("%w: %w", errNoResponse, err)
		}
		return false, false, err
	}
	bc.SetReadDeadline(time.Now().Add(s.cfg.ServerTimeout))
	resp, n, have, sent, err := h.readResponseHead(bc, rb)
	if err != nil {
		return false, sent, err
	}
	body, closeClient := responseBody(req, &resp, req.close || h.quitting())

	// Head and the body bytes that came with it, in one write.
	initial := rb[n:have]
	bodyPart, payload, done, err := h.frame(initial, body.ch, &body.remain, body.known)
	if err != nil {
		return false, sent, err
	}
	extra := len(bodyPart) < len(initial) // bytes after the response: not reusable
	out := wirePool.Get().(*[]byte)
	head := h.appendHead((*out)[:0], &resp, closeClient)
	head = append(head, bodyPart...)
	werr := h.writeClient(head)
	if cap(head) <= wireBufSize {
		*out = head
		wirePool.Put(out)
	}
	if werr != nil {
		return false, true, errClientWrite
	}
	s.stats.toClients.Add(uint64(payload))
	h.status, h.sent = resp.status, payload
	if !done {
		more, err := h.copyBody(bc, rb, &body)
		if err != nil {
			return false, true, err
		}
		extra = extra || more
	}
	if body.known && !resp.close && !extra {
		h.f.pool.put(bc)
	} else {
		bc.Close()
	}
	return !closeClient, true, nil
}

// readResponseHead reads the response head into rb, passing any 1xx
// responses on to the client (sent then says so). The head is rb[:n]; the
// bytes after it up to rb[:have] are the start of the body.
func (h *h1Conn) readResponseHead(bc *backConn, rb []byte) (resp h1Response, n, have int, sent bool, err error) {
	for {
		for {
			if n = headEnd(rb[:have]); n >= 0 {
				break
			}
			if have == len(rb) {
				return resp, 0, 0, sent, errors.New("the backend's response head is larger than 64 KiB")
			}
			m, err := bc.Read(rb[have:])
			have += m
			if err != nil && m == 0 {
				if have == 0 && !sent && (err == io.EOF || errors.Is(err, syscall.ECONNRESET)) {
					err = errNoResponse
				}
				return resp, 0, 0, sent, err
			}
		}
		var ok bool
		resp, ok = parseResponseHead(rb[:n], h.respHdrs)
		h.respHdrs = resp.headers[:0]
		if !ok {
			return resp, 0, 0, sent, errors.New("malformed response head from the backend")
		}
		if resp.status == 101 {
			return resp, 0, 0, sent, errors.New("the backend switched protocols unasked")
		}
		if resp.status >= 200 {
			return resp, n, have, sent, nil
		}
		// 1xx (100, 103): forwarded, then the real response follows.
		if err := h.writeClient(h.appendHead(nil, &resp, false)); err != nil {
			return resp, 0, 0, true, errClientWrite
		}
		sent = true
		have = copy(rb, rb[n:have])
	}
}

// bodyState is how a response body ends and how much of it is left.
type bodyState struct {
	known  bool           // false: the body ends when the backend closes
	remain int64          // Content-Length bytes still to come
	ch     *chunkedReader // non-nil for a chunked body
}

// responseBody is the framing of resp's body, and whether the client
// connection closes after it (closeClient, or a body only a close ends).
func responseBody(req *h1Request, resp *h1Response, closeClient bool) (bodyState, bool) {
	b := bodyState{known: true}
	switch {
	case noBody(req.method, resp.status):
	case resp.chunked:
		b.ch = &chunkedReader{}
	case resp.contentLength >= 0:
		b.remain = resp.contentLength
	default:
		b.known = false
		closeClient = true
	}
	return b, closeClient
}

// copyBody copies the rest of the body from bc to the client. extra reports
// bytes after the body: the backend connection is then not reusable.
func (h *h1Conn) copyBody(bc *backConn, rb []byte, body *bodyState) (extra bool, err error) {
	s := h.s
	lastRead := monotime()
	for {
		m, err := bc.Read(rb)
		if m > 0 {
			lastRead = monotime()
			part, payload, done, ferr := h.frame(rb[:m], body.ch, &body.remain, body.known)
			if ferr != nil {
				return extra, ferr
			}
			if len(part) > 0 {
				if h.writeClient(part) != nil {
					return extra, errClientWrite
				}
				s.stats.toClients.Add(uint64(payload))
				h.sent += payload
			}
			extra = extra || len(part) < m
			if done {
				return extra, nil
			}
			continue
		}
		if err == io.EOF && !body.known {
			return extra, nil // the end of a body delimited by the close
		}
		if isTimeout(err) {
			idle := time.Duration(monotime() - lastRead)
			if idle < s.cfg.ServerTimeout {
				bc.SetReadDeadline(time.Now().Add(s.cfg.ServerTimeout - idle))
				continue
			}
		}
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return extra, err
	}
}

// frame returns the part of p that belongs to the body, how many bytes of
// payload it carries (chunk framing is not counted), and whether the body is
// complete.
func (h *h1Conn) frame(p []byte, ch *chunkedReader, remain *int64, bodyKnown bool) ([]byte, int64, bool, error) {
	switch {
	case !bodyKnown:
		return p, int64(len(p)), false, nil
	case ch != nil:
		before := ch.data
		n, done, err := ch.feed(p)
		return p[:n], ch.data - before, done, err
	default:
		n := min(int64(len(p)), *remain)
		*remain -= n
		return p[:n], n, *remain == 0, nil
	}
}

// appendHead writes the response head for the client.
func (h *h1Conn) appendHead(b []byte, resp *h1Response, closeClient bool) []byte {
	b = appendStatusLine(b, resp.status, resp.reason)
	for _, hd := range resp.headers {
		if !hd.drop {
			b = appendHeader(b, hd)
		}
	}
	if closeClient {
		b = append(b, "Connection: close\r\n"...)
	}
	return append(b, "\r\n"...)
}

// badRequest answers 400 and ends the connection: nothing of the request
// went to a backend, and whatever follows it on the connection cannot be
// told apart from its body.
func (h *h1Conn) badRequest(why string) {
	h.s.log.Debug("bad request", "remote", h.c.RemoteAddr().String(), "why", why)
	h.writeClient([]byte("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " +
		strconv.Itoa(len(why)+1) + "\r\nConnection: close\r\n\r\n" + why + "\n"))
}

// badGateway answers 502, as ReverseProxy's error handler did; the client
// connection stays usable.
func (h *h1Conn) badGateway(req *h1Request, format string, err error) (bool, error) {
	h.s.stats.backendErrors.Add(1)
	h.s.log.Info("backend request failed", "host", string(req.host), "path", string(req.path), "err", fmt.Errorf(format, err))
	closeClient := req.close || h.quitting()
	h.status = http.StatusBadGateway
	msg := "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"
	if closeClient {
		msg = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
	}
	if h.writeClient([]byte(msg)) != nil {
		return false, nil
	}
	return !closeClient, nil
}

// writeClient writes to the client (see trackedConn.writeTLS).
func (h *h1Conn) writeClient(p []byte) error {
	_, err := h.c.writeTLS(h.tc, p, h.s.cfg.ClientTimeout, &h.clientWD)
	return err
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

// backConn is a connection to a backend, as dialBackend makes it (raw I/O
// for plain TCP), with its pool bookkeeping.
type backConn struct {
	net.Conn
	addr      string
	idleSince int64
	idle      *idleCheck
}

// backPool keeps idle backend connections per address, most recently used
// first; a sweep closes those idle for backIdleTimeout.
type backPool struct {
	mu     sync.Mutex
	idle   map[string][]*backConn
	n      int
	sweep  *time.Timer
	closed bool
}

func (p *backPool) get(f *httpFront, addr string) (*backConn, bool, error) {
	p.mu.Lock()
	for l := p.idle[addr]; len(l) > 0; l = p.idle[addr] {
		bc := l[len(l)-1]
		p.idle[addr] = l[:len(l)-1]
		p.n--
		if time.Duration(monotime()-bc.idleSince) >= backIdleTimeout {
			bc.Close()
			continue
		}
		p.mu.Unlock()
		if bc.idle.Silent() {
			return bc, true, nil
		}
		// The backend sent bytes or closed while the connection was idle:
		// whatever it sent belongs to no request of ours.
		bc.Close()
		p.mu.Lock()
	}
	p.mu.Unlock()
	c, err := f.dialBackend(f.s.ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	return &backConn{Conn: c, addr: addr, idle: newIdleCheck(c)}, false, nil
}

func (p *backPool) put(bc *backConn) {
	bc.idleSince = monotime()
	p.mu.Lock()
	if p.closed || len(p.idle[bc.addr]) >= maxIdlePerBackend {
		p.mu.Unlock()
		bc.Close()
		return
	}
	if p.idle == nil {
		p.idle = make(map[string][]*backConn)
	}
	p.idle[bc.addr] = append(p.idle[bc.addr], bc)
	p.n++
	if p.sweep == nil {
		p.sweep = time.AfterFunc(backIdleTimeout, p.sweepIdle)
	}
	p.mu.Unlock()
}

// sweepIdle runs on the timer's goroutine.
func (p *backPool) sweepIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sweep = nil
	if p.closed {
		return
	}
	now := monotime()
	for addr, l := range p.idle {
		// Oldest first: stop at the first one still fresh.
		i := 0
		for ; i < len(l) && time.Duration(now-l[i].idleSince) >= backIdleTimeout; i++ {
			l[i].Close()
		}
		p.n -= i
		p.idle[addr] = append(l[:0], l[i:]...)
	}
	if p.n > 0 {
		p.sweep = time.AfterFunc(backIdleTimeout/2, p.sweepIdle)
	}
}

func (p *backPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.sweep != nil {
		p.sweep.Stop()
		p.sweep = nil
	}
	for addr, l := range p.idle {
		for _, bc := range l {
			bc.Close()
		}
		delete(p.idle, addr)
	}
	p.n = 0
}
