package h2fast

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// stream is one request. Its fields are under the conn's mu, but for id.
type stream struct {
	id                     uint32
	sendWindow, recvWindow int32
	declared, received     int64 // the request's Content-Length (-1: none), and body bytes seen
	body                   []byte
	remoteClosed           bool     // the client sent END_STREAM
	reset                  bool     // the stream was reset; its work stops
	sentEnd                bool     // we sent END_STREAM
	back                   net.Conn // the backend connection in use
	cancel                 func()   // ends a local handler's context
}

var errStreamReset = errors.New("the stream was reset")

func (s *stream) abortLocked() {
	s.reset = true
	if s.back != nil {
		s.back.Close()
	}
	if s.cancel != nil {
		s.cancel()
	}
}

func (s *stream) errLocked(c *conn) error {
	switch {
	case s.reset:
		return errStreamReset
	case c.done:
		return errConnDone
	}
	return nil
}

// request is what a stream's HEADERS asked for.
type request struct {
	method, authority, path string
	fields                  []hpack.HeaderField // the regular ones
	declared                int64               // Content-Length, -1 if none
	tooLarge                bool                // the header list passed the limit: 431
	bodyLen                 int                 // the body bytes sent in the wire with the head
}

// parseRequest checks a request header block as RFC 9113 section 8.3 and
// net/http's server do; a code other than ErrCodeNo is a stream error.
func parseRequest(f *http2.MetaHeadersFrame) (*request, http2.ErrCode) {
	r := &request{declared: -1, tooLarge: f.Truncated}
	var scheme string
	for _, hf := range f.Fields {
		if hf.IsPseudo() {
			switch hf.Name {
			case ":method":
				r.method = hf.Value
			case ":path":
				r.path = hf.Value
			case ":scheme":
				scheme = hf.Value
			case ":authority":
				r.authority = hf.Value
			default:
				return nil, http2.ErrCodeProtocol
			}
			continue
		}
		r.fields = append(r.fields, hf)
		switch hf.Name {
		case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
			return nil, http2.ErrCodeProtocol // RFC 9113 8.2.2
		case "te":
			if hf.Value != "trailers" {
				return nil, http2.ErrCodeProtocol
			}
		case "content-length":
			n, err := strconv.ParseUint(hf.Value, 10, 63)
			if err != nil || hf.Value[0] == '+' || r.declared >= 0 && int64(n) != r.declared {
				return nil, http2.ErrCodeProtocol
			}
			r.declared = int64(n)
		case "host":
			if r.authority == "" {
				r.authority = hf.Value
			}
		}
	}
	switch {
	case r.method == "":
		return nil, http2.ErrCodeProtocol
	case r.method == "CONNECT":
		if scheme != "" || r.path != "" || r.authority == "" {
			return nil, http2.ErrCodeProtocol
		}
	case scheme == "" || r.path == "":
		return nil, http2.ErrCodeProtocol
	case r.path[0] != '/' && !(r.path == "*" && r.method == "OPTIONS"):
		return nil, http2.ErrCodeProtocol
	}
	return r, http2.ErrCodeNo
}

// onHeaders opens a stream, or takes a stream's trailers.
func (c *conn) onHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		return c.connError(http2.ErrCodeProtocol, "a client stream with an even id")
	}
	c.mu.Lock()
	if s := c.streams[id]; s != nil {
		defer c.mu.Unlock()
		c.trailersLocked(s, f)
		return nil
	}
	if id <= c.maxClientID {
		code := http2.ErrCodeProtocol // RFC 9113 5.1.1: a smaller id than one used
		if c.wasOpenLocked(id) {
			code = http2.ErrCodeStreamClosed
		}
		c.goAwayLocked(code)
		c.mu.Unlock()
		return errors.New("http2: HEADERS on a stream that ended or was skipped")
	}
	if c.sentGoAway {
		c.mu.Unlock()
		return nil // past GOAWAY's last stream: ignored
	}
	c.maxClientID = id
	if f.HasPriority() && f.Priority.StreamDep == id {
		c.streamErrorLocked(id, http2.ErrCodeProtocol)
		c.mu.Unlock()
		return nil
	}
	if c.running >= maxStreams {
		// Reset streams count until their work ended (CVE-2023-44487). A
		// refusal costs a RST_STREAM the client must read (the queue of
		// those is bounded), not a goroutine; and a client that respects the
		// limit can meet it too, in the instant between our last frame of
		// a stream and its goroutine's end, so refusals do not end the
		// connection.
		c.streamErrorLocked(id, http2.ErrCodeRefusedStream)
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	req, code := parseRequest(f)
	if code == http2.ErrCodeNo && f.StreamEnded() && req.declared > 0 {
		code = http2.ErrCodeProtocol // a length declared and no DATA to carry it
	}
	if code != http2.ErrCodeNo {
		c.streamError(id, code)
		return nil
	}
	s := &stream{id: id, sendWindow: c.initWindow, recvWindow: streamWindow, declared: req.declared, remoteClosed: f.StreamEnded()}
	c.mu.Lock()
	c.streams[id] = s
	c.running++
	c.mu.Unlock()
	c.wg.Add(1)
	go c.run(s, req)
	return nil
}

// trailersLocked takes a second header block: it must end the stream and
// carry no pseudo-fields. Trailers are not forwarded.
func (c *conn) trailersLocked(s *stream, f *http2.MetaHeadersFrame) {
	switch {
	case s.remoteClosed:
		c.streamErrorLocked(s.id, http2.ErrCodeStreamClosed)
	case !f.StreamEnded() || len(f.PseudoFields()) > 0:
		c.streamErrorLocked(s.id, http2.ErrCodeProtocol)
	case s.declared >= 0 && s.received != s.declared:
		c.streamErrorLocked(s.id, http2.ErrCodeProtocol)
	default:
		s.remoteClosed = true
		c.space.Broadcast()
	}
}

// wasOpenLocked: id is one of the streams that ended lately.
func (c *conn) wasOpenLocked(id uint32) bool {
	for _, r := range c.closedIDs {
		if r == id {
			return true
		}
	}
	return c.resetLocked(id)
}

// run serves one stream on its own goroutine.
func (c *conn) run(s *stream, req *request) {
	defer c.wg.Done()
	c.e.stats.Streams.Add(1)
	start := time.Now()
	var status int
	var sent int64
	backend := ""
	path := req.path
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	addr, ok := "", false
	if !req.tooLarge && req.method != "CONNECT" {
		addr, ok = c.e.host.Backend(req.authority, path)
	}
	switch {
	case req.tooLarge:
		status = 431
		c.respond(s, status, "request header fields too large\n")
	case ok:
		backend = addr
		status, sent = c.relay(s, req, addr)
	default:
		if h := c.e.host.Local(req.authority, path); h != nil && req.method != "CONNECT" {
			c.serveLocal(s, req, h)
			c.finish(s)
			return // the handler logged its own access
		}
		status = 421
		c.respond(s, status, "no route for this host on this connection\n")
	}
	c.finish(s)
	if c.e.cfg.AccessLog && status != 0 {
		c.e.host.Access(req.method, req.authority, path, status, sent, time.Since(start), backend, c.c.IP)
	}
}

// finish ends s's part in the connection: a response that ended while the
// client still sends is cut with RST_STREAM NO_ERROR (RFC 9113 8.1), a
// body nobody read gives its window back, and the last stream to end arms
// the idle timeout (or, after GOAWAY, ends the connection).
func (c *conn) finish(s *stream) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.streams[s.id] == s {
		c.forgetLocked(s)
	}
	switch {
	case s.reset:
	case !s.sentEnd:
		c.rstLocked(s.id, http2.ErrCodeInternal) // the response broke off
	case !s.remoteClosed:
		c.rstLocked(s.id, http2.ErrCodeNo)
	}
	if n := int32(len(s.body)); n > 0 {
		s.body = nil
		c.recvWindow += n
		c.windowUpdateLocked(0, n)
	}
	c.closedIDs[c.nClosed%len(c.closedIDs)] = s.id
	c.nClosed++
	c.running--
	if c.running == 0 {
		d := time.Now().Add(c.e.cfg.ClientTimeout)
		if c.sentGoAway {
			d = time.Unix(1, 0)
		}
		c.c.Conn.SetReadDeadline(d)
		c.idleSet = true
	}
}

// respond answers s with a short text body.
func (c *conn) respond(s *stream, status int, body string) {
	blk := appendStatus(nil, status)
	blk = appendField(blk, "content-type", "text/plain; charset=utf-8")
	blk = appendField(blk, "content-length", strconv.Itoa(len(body)))
	if c.writeHeaders(s, blk, false) == nil {
		c.writeData(s, []byte(body), true)
	}
}
