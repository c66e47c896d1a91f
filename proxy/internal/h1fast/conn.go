package h1fast

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/tee-ingress/tee-ingress/proxy/internal/backpool"
	"github.com/tee-ingress/tee-ingress/proxy/internal/h1"
)

const (
	// initialBuf is a connection's request buffer; it grows for larger heads
	// and bodies up to MaxHeaderBytes + MaxBody.
	initialBuf = 4 << 10
	// MaxBody is the largest request body the fast path buffers (it sends a
	// request only once the whole of it is here, so a backend that answers
	// early cannot leave us blocked writing, and a stale pooled connection
	// can be retried). Larger bodies go to net/http, which streams them.
	MaxBody = 64 << 10
	// headBufSize is the first read of a response: its head and, for most
	// responses, the whole body (one TLS record's worth).
	headBufSize = 16 << 10
	// bodyBufSize is each read of a body that did not fit: four records,
	// sent to the client in one write. It also bounds a response head.
	bodyBufSize = 64 << 10
	// wireBufSize is what a pooled request or response-head buffer may grow
	// to and still be kept; they start at wireBufStart.
	wireBufSize  = bodyBufSize + 4*64
	wireBufStart = 2 << 10
)

// Buffers are taken for a request in flight only: an idle keep-alive
// connection holds its 4 KiB request buffer and nothing else. Most
// responses never take the 64 KiB body buffer.
var (
	headBufPool = sync.Pool{New: func() any { b := make([]byte, headBufSize); return &b }}
	bodyBufPool = sync.Pool{New: func() any { b := make([]byte, bodyBufSize); return &b }}
	wirePool    = sync.Pool{New: func() any { b := make([]byte, 0, wireBufStart); return &b }}
)

// conn is one client connection on the fast path.
type conn struct {
	e *Engine
	c Client

	in   []byte // in[r:w] is read and not yet used
	r, w int

	reqHdrs, respHdrs []h1.Header

	idleSet time.Time // when the idle read deadline was last pushed

	// What the access log says of the request in flight: the status sent
	// (0: none) and the body bytes that reached the client.
	status int
	sent   int64

	mu      sync.Mutex
	back    *backpool.Conn // the backend connection of the request in flight
	aborted bool
}

// errNotPlain: the request is outside the fast path's subset.
var errNotPlain = errors.New("not a plain request")

// Serve runs on the connection's goroutine until the connection ends or is
// handed off. register is called first with what ends the connection at once
// (abort: the drain deadline passed) and what tells it shutdown started
// (kick: an idle connection closes now, a busy one after its response).
func (e *Engine) Serve(c Client, register func(abort, kick func())) {
	h := &conn{e: e, c: c}
	register(h.abort, h.kick)
	// As net/http does for its connections: a bug reached by one client's
	// bytes ends that connection, logged with its stack, not the process.
	defer func() {
		if r := recover(); r != nil {
			buf := make([]byte, 64<<10)
			buf = buf[:runtime.Stack(buf, false)]
			e.log.Error("panic serving an HTTP/1.1 connection", "remote", c.Conn.RemoteAddr().String(), "panic", fmt.Sprint(r), "stack", string(buf))
			h.abort()
		}
	}()
	h.in = make([]byte, initialBuf)
	for {
		n, err := h.readHead()
		if err == nil {
			var keep bool
			keep, err = h.serveOne(n)
			if err == nil && keep {
				continue
			}
		}
		if err == errNotPlain {
			h.handoff()
		} else {
			h.closeClient()
		}
		return
	}
}

// quitting says whether a response must close the connection because
// shutdown started. The host's flag, not the kick, decides: it is set before
// any connection is kicked, so a response written while shutdown is still
// kicking others closes too.
func (h *conn) quitting() bool { return h.e.host.Quitting() }

func (h *conn) kick() { h.c.Conn.SetReadDeadline(time.Unix(1, 0)) }

func (h *conn) abort() {
	h.mu.Lock()
	h.aborted = true
	b := h.back
	h.mu.Unlock()
	h.c.Conn.Close()
	if b != nil {
		b.Close()
	}
}

func (h *conn) closeClient() {
	h.c.TLS.CloseWrite()
	h.c.CloseWrite()
	h.c.Conn.Close()
}

// handoff gives the connection and what was read of it to net/http.
func (h *conn) handoff() {
	h.e.stats.Handoffs.Add(1)
	h.c.Conn.SetReadDeadline(time.Time{})
	var pending []byte
	if h.w > h.r {
		pending = append([]byte(nil), h.in[h.r:h.w]...)
	}
	h.c.Handoff(pending)
}

// readHead reads until in[r:] starts with a complete request head and
// returns its length. errNotPlain: too long for us (net/http answers 431).
func (h *conn) readHead() (int, error) {
	h.compact()
	cfg := &h.e.cfg
	headerDeadline, kicked := false, false
	for {
		if h.w > h.r {
			if n := h1.HeadEnd(h.in[h.r:h.w]); n >= 0 {
				if headerDeadline {
					h.idleSet = time.Time{} // the idle deadline must be set again
				}
				return n, nil
			}
			if h.w-h.r >= cfg.MaxHeaderBytes {
				return 0, errNotPlain
			}
			if !headerDeadline {
				headerDeadline = true
				h.c.Conn.SetReadDeadline(time.Now().Add(cfg.HeaderTimeout))
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
		m, err := h.c.TLS.Read(h.in[h.w:])
		h.w += m
		if err != nil && m == 0 {
			if isTimeout(err) && h.quitting() && h.w > h.r && !kicked {
				// Shutdown cut into a head being read: let it arrive.
				kicked = true
				h.c.Conn.SetReadDeadline(time.Now().Add(cfg.HeaderTimeout))
				continue
			}
			return 0, err
		}
	}
}

// compact moves unread bytes to the front of in, and drops what one large
// request grew once the connection is idle.
func (h *conn) compact() {
	if h.r == h.w {
		h.r, h.w = 0, 0
		if len(h.in) > 4*initialBuf {
			h.in = make([]byte, initialBuf)
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
}

// pushIdleDeadline sets the keep-alive read deadline, at most every
// ClientTimeout/16 (each push moves a runtime timer).
func (h *conn) pushIdleDeadline() {
	if now := time.Now(); now.Sub(h.idleSet) > h.e.cfg.ClientTimeout/16 {
		h.c.Conn.SetReadDeadline(now.Add(h.e.cfg.ClientTimeout))
		h.idleSet = now
	}
}

// grow makes room for at least n bytes in in.
func (h *conn) grow(n int) {
	if n <= len(h.in) {
		return
	}
	b := make([]byte, max(n, 2*len(h.in)))
	copy(b, h.in[:h.w])
	h.in = b
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// serveOne answers the request whose head is in[r:r+n]. keep reports
// whether the connection stays open for another request.
func (h *conn) serveOne(n int) (keep bool, err error) {
	e := h.e
	req, ok := h1.ParseRequestHead(h.in[h.r:h.r+n], h.reqHdrs)
	h.reqHdrs = req.Headers[:0]
	if req.Reject != "" {
		h.badRequest(req.Reject)
		return false, nil
	}
	if !ok || req.ContentLength > MaxBody || n > e.cfg.MaxHeaderBytes {
		return false, errNotPlain
	}
	addr, ok := e.host.Backend(req.Host, req.Path)
	if !ok {
		return false, errNotPlain
	}
	body, err := h.readBody(n, int(max(req.ContentLength, 0)))
	if err != nil {
		return false, err
	}
	out := wirePool.Get().(*[]byte)
	defer func() {
		if cap(*out) <= wireBufSize {
			wirePool.Put(out)
		}
	}()
	*out = h.appendRequest((*out)[:0], &req, body)

	e.stats.Fast.Add(1)
	var start time.Time
	if e.cfg.AccessLog {
		start, h.status, h.sent = time.Now(), 0, 0
	}
	keep, err = h.roundTrip(&req, addr, *out, len(body))
	if e.cfg.AccessLog {
		e.host.Access(string(req.Method), string(req.Host), string(req.Path), h.status, h.sent, time.Since(start), addr, h.c.IP)
	}
	return keep && !req.Close, err
}

// readBody reads the whole body of the request whose head is in[r:r+n],
// before anything is sent, and moves r past it.
func (h *conn) readBody(n, length int) ([]byte, error) {
	total := n + length
	if h.w-h.r < total {
		h.grow(h.r + total)
		h.c.Conn.SetReadDeadline(time.Now().Add(h.e.cfg.ClientTimeout))
		h.idleSet = time.Time{}
		for h.w-h.r < total {
			m, err := h.c.TLS.Read(h.in[h.w : h.r+total])
			h.w += m
			if err != nil && m == 0 {
				return nil, err
			}
		}
	}
	body := h.in[h.r+n : h.r+total]
	h.r += total
	return body, nil
}

// appendRequest writes the request for the backend: the client's head with
// hop-by-hop headers dropped, then ours, then the body.
func (h *conn) appendRequest(b []byte, req *h1.Request, body []byte) []byte {
	b = append(b, req.Method...)
	b = append(b, ' ')
	b = append(b, req.Target...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, req.Host...)
	b = append(b, "\r\n"...)
	keepUnderscores := h.e.cfg.KeepUnderscoreHeaders
	for _, hd := range req.Headers {
		if !hd.Drop && (keepUnderscores || bytes.IndexByte(hd.Name, '_') < 0) {
			b = h1.AppendHeader(b, hd)
		}
	}
	b = h1.AppendForwarded(b, h.c.IP, req.Host)
	b = append(b, "\r\n"...)
	return append(b, body...)
}
