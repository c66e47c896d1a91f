package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"
)

const (
	// maxEvidenceBody bounds the request body we drain after an evidence
	// request (they are GET and HEAD: normally none) before closing instead.
	maxEvidenceBody = 64 << 10
	// respBufferLimit is how much of a response is buffered to send it with a
	// Content-Length in one write; larger responses stream.
	respBufferLimit = 64 << 10
)

// evidenceReader feeds the HTTP parser: the sniffed bytes first, then the
// client, under fixed deadlines and a byte limit.
type evidenceReader struct {
	x       *tcpSession
	pending []byte
	limit   int64
}

func (r *evidenceReader) Read(p []byte) (int, error) {
	if r.limit <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.limit {
		p = p[:r.limit]
	}
	var n int
	var err error
	if len(r.pending) > 0 {
		n = copy(p, r.pending)
		r.pending = r.pending[n:]
	} else {
		n, err = r.x.tc.Read(p)
		if n > 0 {
			r.x.touch()
		}
	}
	r.limit -= int64(n)
	return n, err
}

// serveEvidence answers HTTP/1.x evidence requests on a tcp-mode connection.
// The first have bytes of x.small start the first request. After each response
// the next request is sniffed again: another evidence request is answered too,
// anything else hands the connection (with the bytes already read) to the
// backend, which then gets everything that follows.
func (x *tcpSession) serveEvidence(have int) {
	cfg := &x.s.cfg
	r := &evidenceReader{x: x, pending: x.small[:have]}
	br := bufio.NewReaderSize(r, 4096)
	for first := true; ; first = false {
		if !first {
			x.client.SetReadDeadline(time.Now().Add(cfg.ClientTimeout))
			r.limit = int64(cfg.MaxHeaderBytes)
			dec, err := peekDecision(br, x.s.local)
			if err != nil {
				x.closeClean()
				return
			}
			if dec == sniffBackend {
				x.handoffToBackend(br, r)
				return
			}
		}
		x.client.SetReadDeadline(time.Now().Add(cfg.HeaderTimeout))
		r.limit = int64(cfg.MaxHeaderBytes)
		req, err := http.ReadRequest(br)
		if err != nil {
			// A head past the limit ends in EOF from the limited reader:
			// that is a 431 (as net/http answers in http mode), not a
			// client that went away.
			switch {
			case r.limit <= 0:
				x.writeSimpleResponse(http.StatusRequestHeaderFieldsTooLarge)
			case !isTimeout(err) && err != io.EOF:
				x.writeSimpleResponse(http.StatusBadRequest)
			}
			x.s.log.Debug("bad evidence request", "remote", x.client.RemoteAddr().String(), "err", err)
			x.closeClean()
			return
		}
		r.limit = maxEvidenceBody + 1
		if !x.serveEvidenceRequest(req) {
			x.closeClean()
			return
		}
	}
}

// peekDecision waits for enough of the next request to tell evidence from
// anything else, without consuming it.
func peekDecision(br *bufio.Reader, local localPaths) (sniffResult, error) {
	want := 1
	for {
		if _, err := br.Peek(want); err != nil {
			return sniffMore, err
		}
		b, _ := br.Peek(br.Buffered())
		if d := local.sniff(b); d != sniffMore {
			return d, nil
		}
		want = len(b) + 1
	}
}

// handoffToBackend gives the connection to the backend after evidence was
// served: the bytes the parser read ahead go first.
func (x *tcpSession) handoffToBackend(br *bufio.Reader, r *evidenceReader) {
	x.decision.Store(decBackend)
	close(x.handoff)
	x.touch()
	x.client.SetReadDeadline(time.Now().Add(x.s.cfg.ClientTimeout))
	pending, _ := br.Peek(br.Buffered())
	if len(r.pending) > 0 {
		pending = append(slices.Clone(pending), r.pending...)
	}
	x.clientPump(pending)
}

// serveEvidenceRequest runs the evidence handler for one request and reports
// whether the connection may carry another one.
func (x *tcpSession) serveEvidenceRequest(req *http.Request) bool {
	x.s.stats.evidence.Add(1)
	req = req.WithContext(x.s.ctx)
	req.RemoteAddr = x.client.RemoteAddr().String()
	req.TLS = x.state
	w := &h1Writer{x: x, req: req, header: make(http.Header)}
	x.client.SetWriteDeadline(time.Now().Add(x.s.cfg.ClientTimeout))
	x.s.cfg.Evidence.ServeHTTP(w, req)
	if err := w.finish(); err != nil {
		x.s.log.Debug("writing evidence response", "remote", req.RemoteAddr, "err", err)
		return false
	}
	// Consume the request body so that the next request starts where we read.
	n, err := io.Copy(io.Discard, io.LimitReader(req.Body, maxEvidenceBody+1))
	if err != nil || n > maxEvidenceBody {
		return false
	}
	return !w.closeAfter
}

// writeSimpleResponse answers a request we could not parse.
func (x *tcpSession) writeSimpleResponse(status int) {
	text := http.StatusText(status)
	x.client.SetWriteDeadline(time.Now().Add(x.s.cfg.HeaderTimeout))
	fmt.Fprintf(x.tc, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s\n",
		status, text, len(text)+1, text)
}

// h1Writer is the http.ResponseWriter for evidence requests on tcp-mode
// connections. Responses up to respBufferLimit are sent in one write with a
// Content-Length; larger ones stream, chunked for HTTP/1.1.
type h1Writer struct {
	x          *tcpSession
	req        *http.Request
	header     http.Header
	status     int
	buf        []byte
	wroteHead  bool // status line and headers are on the wire
	chunked    bool
	closeAfter bool
	bodyLen    int64
	err        error
}

var _ http.ResponseWriter = (*h1Writer)(nil)

func (w *h1Writer) Header() http.Header { return w.header }

func (w *h1Writer) WriteHeader(code int) {
	if w.status != 0 || code < 200 || code > 999 {
		return // informational responses are not passed on
	}
	w.status = code
}

func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified
}

func (w *h1Writer) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.err != nil {
		return 0, w.err
	}
	w.bodyLen += int64(len(p))
	if w.req.Method == http.MethodHead {
		return len(p), nil
	}
	if !w.wroteHead && len(w.buf)+len(p) <= respBufferLimit {
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	if !w.wroteHead {
		if w.err = w.writeHead(false); w.err != nil {
			return 0, w.err
		}
	}
	w.err = w.writeBody(p)
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

// writeHead sends the status line and headers, with the buffered body when
// final (the handler has returned).
func (w *h1Writer) writeHead(final bool) error {
	w.wroteHead = true
	h := w.header
	if w.req.Close || h.Get("Connection") == "close" {
		w.closeAfter = true
	}
	if h.Get("Content-Type") == "" && len(w.buf) > 0 && bodyAllowed(w.status) {
		h.Set("Content-Type", http.DetectContentType(w.buf))
	}
	if h.Get("Date") == "" {
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	switch {
	case !bodyAllowed(w.status):
		h.Del("Content-Length")
	case h.Get("Content-Length") != "":
	case w.req.Method == http.MethodHead:
		if w.bodyLen > 0 {
			h.Set("Content-Length", strconv.FormatInt(w.bodyLen, 10))
		}
	case final:
		h.Set("Content-Length", strconv.FormatInt(w.bodyLen, 10))
	case w.req.ProtoAtLeast(1, 1):
		w.chunked = true
		h.Set("Transfer-Encoding", "chunked")
	default:
		w.closeAfter = true // HTTP/1.0: the body ends with the connection
	}
	switch {
	case w.closeAfter:
		h.Set("Connection", "close")
	case !w.req.ProtoAtLeast(1, 1):
		h.Set("Connection", "keep-alive")
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", w.status, http.StatusText(w.status))
	h.Write(&b)
	b.WriteString("\r\n")
	if w.req.Method != http.MethodHead && bodyAllowed(w.status) {
		if w.chunked && len(w.buf) > 0 {
			fmt.Fprintf(&b, "%x\r\n", len(w.buf))
			b.Write(w.buf)
			b.WriteString("\r\n")
		} else {
			b.Write(w.buf)
		}
	}
	w.buf = nil
	_, err := w.x.tc.Write(b.Bytes())
	return err
}

func (w *h1Writer) writeBody(p []byte) error {
	if !w.chunked {
		_, err := w.x.tc.Write(p)
		return err
	}
	b := make([]byte, 0, len(p)+16)
	b = fmt.Appendf(b, "%x\r\n", len(p))
	b = append(b, p...)
	b = append(b, "\r\n"...)
	_, err := w.x.tc.Write(b)
	return err
}

// finish completes the response after the handler returned.
func (w *h1Writer) finish() error {
	if w.err != nil {
		return w.err
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.wroteHead {
		return w.writeHead(true)
	}
	if w.chunked {
		_, err := io.WriteString(w.x.tc, "0\r\n\r\n")
		return err
	}
	if w.closeAfter {
		return nil
	}
	if cl := w.header.Get("Content-Length"); cl != "" && cl != strconv.FormatInt(w.bodyLen, 10) && w.req.Method != http.MethodHead {
		return errors.New("evidence handler wrote a body that disagrees with its Content-Length")
	}
	return nil
}
