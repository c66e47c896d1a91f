package h2fast

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tee-ingress/tee-ingress/proxy/internal/backpool"
	"github.com/tee-ingress/tee-ingress/proxy/internal/h1"
)

// A stream's request goes to its backend as HTTP/1.1, as the HTTP/1.1 fast
// path sends it (the same dropped and added fields), and the response comes
// back as HEADERS and DATA frames.

const bufSize = 16 << 10

var (
	bufPool  = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}
	wirePool = sync.Pool{New: func() any { b := make([]byte, 0, 2<<10); return &b }}
)

var (
	errNoResponse = errors.New("the backend closed the connection without a response")
	errClient     = errors.New("the client stream ended") // not the backend's fault
)

// relay forwards s's request to addr and returns the status answered and
// the body bytes sent. A pooled connection the backend closed while idle is
// retried once on a new one when the request can be sent again.
func (c *conn) relay(s *stream, req *request, addr string) (int, int64) {
	rb := bufPool.Get().(*[]byte)
	defer bufPool.Put(rb)
	wb := wirePool.Get().(*[]byte)
	wire, retryable := c.requestWire(s, req, (*wb)[:0])
	defer func() {
		if cap(wire) <= 16<<10 {
			*wb = wire[:0]
			wirePool.Put(wb)
		}
	}()
	for attempt := 0; ; attempt++ {
		bc, reused, err := c.e.pool.Get(c.e.ctx, addr)
		if err != nil {
			return c.badGateway(s, req, fmt.Errorf("dialling the backend: %w", err)), 0
		}
		c.mu.Lock()
		if err := s.errLocked(c); err != nil {
			c.mu.Unlock()
			bc.Close()
			return 0, 0
		}
		s.back = bc
		c.mu.Unlock()
		r := exchange{c: c, s: s, req: req, bc: bc, streamBody: !retryable}
		err = r.run(wire, *rb)
		r.release(err == nil && r.keep)
		if err == nil {
			if retryable {
				c.e.stats.ToBackends.Add(uint64(req.bodyLen)) // it went in the wire
			}
			return r.status, r.sent
		}
		switch {
		case errors.Is(err, errClient) || errors.Is(err, errStreamReset) || errors.Is(err, errConnDone):
			return r.status, r.sent
		case r.status != 0:
			// The response started: all we can do is reset the stream.
			c.e.stats.BackendErrors.Add(1)
			c.e.log.Info("backend response failed", "host", req.authority, "path", req.path, "err", err)
			return r.status, r.sent
		case reused && attempt == 0 && retryable && errors.Is(err, errNoResponse):
			continue
		}
		return c.badGateway(s, req, err), 0
	}
}

// badGateway answers 502 with no body, as ReverseProxy's error handler did.
func (c *conn) badGateway(s *stream, req *request, err error) int {
	c.e.stats.BackendErrors.Add(1)
	c.e.log.Info("backend request failed", "host", req.authority, "path", req.path, "err", err)
	blk := appendField(appendStatus(nil, 502), "content-length", "0")
	c.writeHeaders(s, blk, true)
	return 502
}

// requestWire is the request head for the backend, and the body too when
// the client sent all of it with the head (then the request can be sent a
// second time: retryable). The wire is built in buf if it fits.
func (c *conn) requestWire(s *stream, req *request, buf []byte) ([]byte, bool) {
	c.mu.Lock()
	whole := s.remoteClosed
	var body []byte
	if whole {
		body, s.body = s.body, nil
	}
	c.mu.Unlock()
	b := append(buf, req.method...)
	b = append(b, ' ')
	b = append(b, req.path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, req.authority...)
	b = append(b, "\r\n"...)
	b = c.appendFields(b, req)
	switch {
	case whole && (len(body) > 0 || req.declared >= 0 || bodyMethod(req.method)):
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(len(body)), 10)
		b = append(b, "\r\n\r\n"...)
		b = append(b, body...)
		req.bodyLen = len(body)
		c.giveBack(s, len(body))
	case whole:
		b = append(b, "\r\n"...)
	case req.declared >= 0:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, req.declared, 10)
		b = append(b, "\r\n\r\n"...)
	default:
		b = append(b, "Transfer-Encoding: chunked\r\n\r\n"...)
	}
	return b, whole
}

// bodyMethod: methods net/http's Transport sends "Content-Length: 0" for
// when their body is empty.
func bodyMethod(m string) bool { return m == "POST" || m == "PUT" || m == "PATCH" }

// appendFields appends the client's fields the backend gets (cookies joined
// into one line, RFC 9113 8.2.3), then the proxy's own.
func (c *conn) appendFields(b []byte, req *request) []byte {
	keepUnderscores := c.e.cfg.KeepUnderscoreHeaders
	cookies := 0
	for _, hf := range req.fields {
		switch hf.Name {
		case "host", "content-length", "te", "trailer", "expect":
			continue
		case "cookie":
			if cookies == 0 {
				b = append(b, "cookie: "...)
			} else {
				b = append(b, "; "...)
			}
			cookies++
			b = append(b, hf.Value...)
			continue
		}
		if h1.Dropped([]byte(hf.Name)) || !keepUnderscores && strings.IndexByte(hf.Name, '_') >= 0 {
			continue
		}
		b = append(b, hf.Name...)
		b = append(b, ": "...)
		b = append(b, hf.Value...)
		b = append(b, "\r\n"...)
	}
	if cookies > 0 {
		b = append(b, "\r\n"...)
	}
	return h1.AppendForwarded(b, c.c.IP, req.authority)
}

// giveBack returns n body bytes' worth of window to the client.
func (c *conn) giveBack(s *stream, n int) {
	c.mu.Lock()
	c.giveBackLocked(s, int32(n))
	c.mu.Unlock()
}

// readBody waits for request body bytes of s and copies them into p; io.EOF
// once the client ended the stream and everything was read.
func (c *conn) readBody(s *stream, p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(s.body) == 0 && !s.remoteClosed {
		if err := s.errLocked(c); err != nil {
			return 0, err
		}
		c.space.Wait()
	}
	if err := s.errLocked(c); err != nil {
		return 0, err
	}
	if len(s.body) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.body)
	s.body = s.body[n:]
	if len(s.body) == 0 {
		s.body = nil
	}
	c.giveBackLocked(s, int32(n))
	return n, nil
}

// exchange is one request on one backend connection.
type exchange struct {
	c      *conn
	s      *stream
	req    *request
	bc     *backpool.Conn
	status int   // set once HEADERS went to the client
	sent   int64 // body bytes sent to the client
	keep   bool  // the backend connection can serve another request
	// released: the backend connection went back to the pool or was closed.
	released bool
	// streamBody: the request body follows the head from the client's
	// DATA frames (the wire did not carry it).
	streamBody bool
	hdrs       [24]h1.Header
}

func (x *exchange) run(wire, rb []byte) error {
	cfg := &x.c.e.cfg
	x.bc.SetWriteDeadline(time.Now().Add(cfg.ServerTimeout))
	if _, err := x.bc.Write(wire); err != nil {
		if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
			err = fmt.Errorf("%w: %w", errNoResponse, err)
		}
		return err
	}
	if x.streamBody {
		if err := x.sendBody(rb); err != nil {
			return err
		}
	}
	x.bc.SetReadDeadline(time.Now().Add(cfg.ServerTimeout))
	resp, rb, n, have, err := x.readHead(rb)
	if err != nil {
		return err
	}
	return x.respond(&resp, rb, n, have)
}

// sendBody copies the request body from the client's DATA frames to the
// backend as it comes: as is under a declared length, chunked without one.
func (x *exchange) sendBody(rb []byte) error {
	chunked := x.req.declared < 0
	for {
		n, err := x.c.readBody(x.s, rb[16:len(rb)-2])
		if n > 0 {
			p := rb[16 : 16+n]
			if chunked {
				size := strconv.AppendUint(nil, uint64(n), 16)
				start := 16 - len(size) - 2
				copy(rb[start:], size)
				rb[14], rb[15] = '\r', '\n'
				p = append(rb[start:16+n], '\r', '\n')
			}
			x.bc.SetWriteDeadline(time.Now().Add(x.c.e.cfg.ServerTimeout))
			if _, werr := x.bc.Write(p); werr != nil {
				return werr
			}
			x.c.e.stats.ToBackends.Add(uint64(n))
		}
		if err == io.EOF {
			if chunked {
				_, err := x.bc.Write([]byte("0\r\n\r\n"))
				return err
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %w", errClient, err)
		}
	}
}

// readHead reads the response head into rb, or a larger buffer for a head
// past rb's size (out); 1xx responses are sent on as they come. The head is
// out[:n]; out[n:have] starts the body.
func (x *exchange) readHead(rb []byte) (resp h1.Response, out []byte, n, have int, err error) {
	for {
		for n = h1.HeadEnd(rb[:have]); n < 0; n = h1.HeadEnd(rb[:have]) {
			if have == len(rb) && len(rb) >= maxRespHead {
				return resp, rb, 0, 0, errors.New("the backend's response head is larger than 64 KiB")
			}
			if have == len(rb) {
				rb = append(rb, make([]byte, maxRespHead-len(rb))...)
			}
			m, err := x.bc.Read(rb[have:])
			have += m
			if err != nil && m == 0 {
				if have == 0 && (err == io.EOF || errors.Is(err, syscall.ECONNRESET)) {
					err = errNoResponse
				}
				return resp, rb, 0, 0, err
			}
		}
		var ok bool
		resp, ok = h1.ParseResponseHead(rb[:n], x.hdrs[:0])
		if !ok {
			return resp, rb, 0, 0, errors.New("malformed response head from the backend")
		}
		if resp.Status == 101 {
			return resp, rb, 0, 0, errors.New("the backend switched protocols unasked")
		}
		if resp.Status >= 200 {
			return resp, rb, n, have, nil
		}
		// 1xx (100, 103): forwarded, as ReverseProxy does; the response
		// follows.
		if err := x.c.writeHeaders(x.s, x.block(nil, &resp), false); err != nil {
			return resp, rb, 0, 0, fmt.Errorf("%w: %w", errClient, err)
		}
		have = copy(rb, rb[n:have])
	}
}

// release is done with the backend connection: back to the pool if keep,
// else closed. It is called as soon as the response is read whole, before
// its last frame goes to the client: a client that sends its next request
// on reading it finds the connection in the pool.
func (x *exchange) release(keep bool) {
	if x.released {
		return
	}
	x.released = true
	x.c.mu.Lock()
	x.s.back = nil // a reset from now on must not close a pooled connection
	x.c.mu.Unlock()
	if keep {
		x.c.e.pool.Put(x.bc)
	} else {
		x.bc.Close()
	}
}

// respond sends the response head as HEADERS and the body as DATA.
func (x *exchange) respond(resp *h1.Response, rb []byte, n, have int) error {
	noBody := h1.NoBody([]byte(x.req.method), resp.Status)
	blk := x.block(rb[have:have], resp) // the free end of rb, if it fits
	body := bodyOf(resp, noBody)
	x.keep = body.known && !resp.Close
	if noBody {
		x.release(x.keep && have == n)
	}
	if err := x.c.writeHeaders(x.s, blk, noBody); err != nil {
		return fmt.Errorf("%w: %w", errClient, err)
	}
	x.status = resp.Status
	if noBody {
		return nil
	}
	return x.copyBody(&body, rb, rb[n:have])
}

// block appends resp's header block to b.
func (x *exchange) block(b []byte, resp *h1.Response) []byte {
	b = appendStatus(b, resp.Status)
	for _, hd := range resp.Headers {
		if !hd.Drop && !hopByHop(hd.Name) {
			b = appendFieldLower(b, hd.Name, hd.Value)
		}
	}
	return b
}

// hopByHop: response fields HTTP/2 has no place for (RFC 9113 8.2.2) that
// package h1 leaves in for HTTP/1.1 clients.
func hopByHop(name []byte) bool {
	return len(name) == len("transfer-encoding") && strings.EqualFold(string(name), "transfer-encoding") ||
		len(name) == len("trailer") && strings.EqualFold(string(name), "trailer")
}

// body is how a response body ends and how much of it is left.
type body struct {
	known  bool              // false: it ends when the backend closes
	remain int64             // Content-Length bytes still to come
	ch     *h1.ChunkedReader // non-nil for a chunked body
}

func bodyOf(resp *h1.Response, noBody bool) body {
	switch {
	case noBody:
		return body{known: true}
	case resp.Chunked:
		return body{known: true, ch: &h1.ChunkedReader{}}
	case resp.ContentLength >= 0:
		return body{known: true, remain: resp.ContentLength}
	}
	return body{}
}

// copyBody sends the body to the client, first the bytes that came with the
// head, then what the backend sends, taking the chunked framing off.
func (x *exchange) copyBody(b *body, rb, first []byte) error {
	var out []byte
	if b.ch != nil {
		ob := bufPool.Get().(*[]byte)
		defer bufPool.Put(ob)
		out = (*ob)[:0]
	}
	p := first
	lastRead := time.Now()
	for {
		data, done, extra, err := x.take(b, p, out)
		if err != nil {
			return err
		}
		if done {
			x.release(x.keep && !extra)
		}
		if len(data) > 0 || done {
			if err := x.c.writeData(x.s, data, done); err != nil {
				return fmt.Errorf("%w: %w", errClient, err)
			}
			x.sent += int64(len(data))
			x.c.e.stats.ToClients.Add(uint64(len(data)))
		}
		if done {
			return nil
		}
		m, err := x.bc.Read(rb)
		p = rb[:m]
		if m > 0 {
			lastRead = time.Now()
			continue
		}
		if err == io.EOF && !b.known {
			x.release(false)
			return x.c.writeData(x.s, nil, true) // the body ended with the close
		}
		if isTimeout(err) && time.Since(lastRead) < x.c.e.cfg.ServerTimeout {
			x.bc.SetReadDeadline(lastRead.Add(x.c.e.cfg.ServerTimeout))
			continue
		}
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
}

// take is the part of p that is body data (in out, for a chunked body),
// whether the body is complete, and whether bytes came after it.
func (x *exchange) take(b *body, p, out []byte) (data []byte, done, extra bool, err error) {
	switch {
	case !b.known:
		return p, false, false, nil
	case b.ch != nil:
		n, done, err := b.ch.FeedData(p, func(d []byte) { out = append(out, d...) })
		return out, done, n < len(p), err
	default:
		n := min(int64(len(p)), b.remain)
		b.remain -= n
		return p[:n], b.remain == 0, n < int64(len(p)), nil
	}
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
