package h1fast

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/tee-ingress/tee-ingress/proxy/internal/backpool"
	"github.com/tee-ingress/tee-ingress/proxy/internal/h1"
)

// roundTrip sends the request to the backend and the response to the client.
// A pooled connection the backend closed while idle is retried once on a
// new one (the request went nowhere: the backend sent nothing back).
func (h *conn) roundTrip(req *h1.Request, addr string, wire []byte, bodyLen int) (bool, error) {
	rb := headBufPool.Get().(*[]byte)
	defer headBufPool.Put(rb)
	for attempt := 0; ; attempt++ {
		bc, reused, err := h.e.pool.Get(h.e.ctx, addr)
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
			h.e.stats.ToBackends.Add(uint64(bodyLen))
			return keep, nil
		}
		bc.Close()
		if errors.Is(err, errClientWrite) {
			return false, nil // the client went away; not the backend's fault
		}
		if sent {
			// Part of the response reached the client: all we can do is
			// end the connection.
			h.e.stats.BackendErrors.Add(1)
			h.e.log.Info("backend response failed", "host", string(req.Host), "path", string(req.Path), "err", err)
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
func (h *conn) exchange(req *h1.Request, bc *backpool.Conn, wire, rb []byte) (keep, sent bool, err error) {
	bc.SetWriteDeadline(time.Now().Add(h.e.cfg.ServerTimeout))
	if _, err := bc.Write(wire); err != nil {
		if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
			err = fmt.Errorf("%w: %w", errNoResponse, err)
		}
		return false, false, err
	}
	bc.SetReadDeadline(time.Now().Add(h.e.cfg.ServerTimeout))
	resp, rb, n, have, sent, err := h.readResponseHead(bc, rb)
	if err != nil {
		return false, sent, err
	}
	body, closeClient := responseBody(req, &resp, req.Close || h.quitting())

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
	h.e.stats.ToClients.Add(uint64(payload))
	h.status, h.sent = resp.Status, payload
	if !done {
		if !body.known || body.ch != nil || body.remain > int64(len(rb)) {
			big := bodyBufPool.Get().(*[]byte)
			defer bodyBufPool.Put(big)
			rb = *big
		}
		more, err := h.copyBody(bc, rb, &body)
		if err != nil {
			return false, true, err
		}
		extra = extra || more
	}
	if body.known && !resp.Close && !extra {
		h.e.pool.Put(bc)
	} else {
		bc.Close()
	}
	return !closeClient, true, nil
}

// readResponseHead reads the response head into rb, passing any 1xx
// responses on to the client (sent then says so). The head is out[:n], out
// being rb or, for a head larger than rb, a larger buffer; the bytes after
// it up to out[:have] are the start of the body.
func (h *conn) readResponseHead(bc *backpool.Conn, rb []byte) (resp h1.Response, out []byte, n, have int, sent bool, err error) {
	for {
		for {
			if n = h1.HeadEnd(rb[:have]); n >= 0 {
				break
			}
			if have == len(rb) && len(rb) >= bodyBufSize {
				return resp, rb, 0, 0, sent, errors.New("the backend's response head is larger than 64 KiB")
			}
			if have == len(rb) {
				rb = append(make([]byte, 0, bodyBufSize), rb...)[:bodyBufSize]
			}
			m, err := bc.Read(rb[have:])
			have += m
			if err != nil && m == 0 {
				if have == 0 && !sent && (err == io.EOF || errors.Is(err, syscall.ECONNRESET)) {
					err = errNoResponse
				}
				return resp, rb, 0, 0, sent, err
			}
		}
		var ok bool
		resp, ok = h1.ParseResponseHead(rb[:n], h.respHdrs)
		h.respHdrs = resp.Headers[:0]
		if !ok {
			return resp, rb, 0, 0, sent, errors.New("malformed response head from the backend")
		}
		if resp.Status == 101 {
			return resp, rb, 0, 0, sent, errors.New("the backend switched protocols unasked")
		}
		if resp.Status >= 200 {
			return resp, rb, n, have, sent, nil
		}
		// 1xx (100, 103): forwarded, then the real response follows.
		if err := h.writeClient(h.appendHead(nil, &resp, false)); err != nil {
			return resp, rb, 0, 0, true, errClientWrite
		}
		sent = true
		have = copy(rb, rb[n:have])
	}
}

// bodyState is how a response body ends and how much of it is left.
type bodyState struct {
	known  bool              // false: the body ends when the backend closes
	remain int64             // Content-Length bytes still to come
	ch     *h1.ChunkedReader // non-nil for a chunked body
}

// responseBody is the framing of resp's body, and whether the client
// connection closes after it (closeClient, or a body only a close ends).
func responseBody(req *h1.Request, resp *h1.Response, closeClient bool) (bodyState, bool) {
	b := bodyState{known: true}
	switch {
	case h1.NoBody(req.Method, resp.Status):
	case resp.Chunked:
		b.ch = &h1.ChunkedReader{}
	case resp.ContentLength >= 0:
		b.remain = resp.ContentLength
	default:
		b.known = false
		closeClient = true
	}
	return b, closeClient
}

// copyBody copies the rest of the body from bc to the client. extra reports
// bytes after the body: the backend connection is then not reusable.
func (h *conn) copyBody(bc *backpool.Conn, rb []byte, body *bodyState) (extra bool, err error) {
	lastRead := time.Now()
	for {
		m, err := bc.Read(rb)
		if m > 0 {
			lastRead = time.Now()
			part, payload, done, ferr := h.frame(rb[:m], body.ch, &body.remain, body.known)
			if ferr != nil {
				return extra, ferr
			}
			if len(part) > 0 {
				if h.writeClient(part) != nil {
					return extra, errClientWrite
				}
				h.e.stats.ToClients.Add(uint64(payload))
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
			idle := time.Since(lastRead)
			if idle < h.e.cfg.ServerTimeout {
				bc.SetReadDeadline(time.Now().Add(h.e.cfg.ServerTimeout - idle))
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
func (h *conn) frame(p []byte, ch *h1.ChunkedReader, remain *int64, bodyKnown bool) ([]byte, int64, bool, error) {
	switch {
	case !bodyKnown:
		return p, int64(len(p)), false, nil
	case ch != nil:
		before := ch.Data()
		n, done, err := ch.Feed(p)
		return p[:n], ch.Data() - before, done, err
	default:
		n := min(int64(len(p)), *remain)
		*remain -= n
		return p[:n], n, *remain == 0, nil
	}
}

// appendHead writes the response head for the client.
func (h *conn) appendHead(b []byte, resp *h1.Response, closeClient bool) []byte {
	b = h1.AppendStatusLine(b, resp.Status, resp.Reason)
	for _, hd := range resp.Headers {
		if !hd.Drop {
			b = h1.AppendHeader(b, hd)
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
func (h *conn) badRequest(why string) {
	h.e.log.Debug("bad request", "remote", h.c.Conn.RemoteAddr().String(), "why", why)
	h.writeClient([]byte("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " +
		strconv.Itoa(len(why)+1) + "\r\nConnection: close\r\n\r\n" + why + "\n"))
}

// badGateway answers 502, as ReverseProxy's error handler did; the client
// connection stays usable.
func (h *conn) badGateway(req *h1.Request, format string, err error) (bool, error) {
	h.e.stats.BackendErrors.Add(1)
	h.e.log.Info("backend request failed", "host", string(req.Host), "path", string(req.Path), "err", fmt.Errorf(format, err))
	closeClient := req.Close || h.quitting()
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

func (h *conn) writeClient(p []byte) error { return h.c.Write(p) }
