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

// serveEvidenceRequest runs the evidence handler for one request, writes its
// response with http.Response.Write, and reports whether the connection may
// carry another request. The handler runs on a goroutine of its own so that a
// response too large to buffer streams: its writes block until Response.Write
// has sent them.
func (x *tcpSession) serveEvidenceRequest(req *http.Request) bool {
	x.s.stats.evidence.Add(1)
	req = req.WithContext(x.s.ctx)
	req.RemoteAddr = x.client.RemoteAddr().String()
	req.TLS = x.state
	w := newEvidenceWriter(req)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer w.handlerReturned()
		defer func() {
			if r := recover(); r != nil {
				x.s.log.Error("panic in the evidence handler", "path", req.URL.Path, "panic", fmt.Sprint(r))
				w.failed = true
			}
		}()
		x.s.cfg.Evidence.ServeHTTP(w, req)
	}()
	<-w.decided
	x.client.SetWriteDeadline(time.Now().Add(x.s.cfg.ClientTimeout))
	resp := w.response()
	err := resp.Write(x.tc)
	w.pr.CloseWithError(errors.Join(err, io.ErrClosedPipe)) // a handler still writing stops
	<-done
	if err == nil && w.failed {
		err = errors.New("the evidence handler panicked")
	}
	if err != nil {
		x.s.log.Debug("writing evidence response", "remote", req.RemoteAddr, "err", err)
		return false
	}
	// Consume the request body so that the next request starts where we read.
	n, err := io.Copy(io.Discard, io.LimitReader(req.Body, maxEvidenceBody+1))
	if err != nil || n > maxEvidenceBody {
		return false
	}
	return !resp.Close
}

// writeSimpleResponse answers a request we could not parse.
func (x *tcpSession) writeSimpleResponse(status int) {
	text := http.StatusText(status)
	x.client.SetWriteDeadline(time.Now().Add(x.s.cfg.HeaderTimeout))
	fmt.Fprintf(x.tc, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s\n",
		status, text, len(text)+1, text)
}

// evidenceWriter is the http.ResponseWriter for evidence requests on
// tcp-mode connections. A response whose body fits respBufferLimit is sent
// with a Content-Length; a larger one streams through a pipe, chunked for
// HTTP/1.1. decided is closed once the head can be written: the handler
// returned, or its body outgrew the buffer.
type evidenceWriter struct {
	req       *http.Request
	header    http.Header
	status    int
	buf       []byte
	written   int64 // body bytes the handler wrote (HEAD: counted, not kept)
	streaming bool
	sent      http.Header // the header as it was when decided closed
	decided   chan struct{}
	pr        *io.PipeReader
	pw        *io.PipeWriter
	failed    bool // the handler panicked
}

func newEvidenceWriter(req *http.Request) *evidenceWriter {
	w := &evidenceWriter{req: req, header: make(http.Header), decided: make(chan struct{})}
	w.pr, w.pw = io.Pipe()
	return w
}

func (w *evidenceWriter) Header() http.Header { return w.header }

func (w *evidenceWriter) WriteHeader(code int) {
	if w.status != 0 || code < 200 || code > 999 {
		return // informational responses are not passed on
	}
	w.status = code
}

// sniffLen is what http.DetectContentType looks at.
const sniffLen = 512

func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified
}

func (w *evidenceWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	w.written += int64(len(p))
	if w.req.Method == http.MethodHead {
		if n := sniffLen - len(w.buf); n > 0 { // for Content-Type, never sent
			w.buf = append(w.buf, p[:min(n, len(p))]...)
		}
		return len(p), nil
	}
	if w.streaming {
		return w.pw.Write(p)
	}
	w.buf = append(w.buf, p...)
	if len(w.buf) > respBufferLimit {
		w.streaming = true
		w.decide()
	}
	return len(p), nil
}

// handlerReturned ends the body, or lets the head go out.
func (w *evidenceWriter) handlerReturned() {
	if w.streaming {
		w.pw.Close()
		return
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	w.decide()
}

// decide lets the head go out with the header as it is now: later changes
// by the handler are ignored, as net/http's server ignores them.
func (w *evidenceWriter) decide() {
	w.sent = w.header.Clone()
	close(w.decided)
}

// response is what the handler answered, once decided is closed: the
// framing is Response.Write's, the defaults (Content-Type sniffed, Date,
// HTTP/1.0 keep-alive) are net/http's server's.
func (w *evidenceWriter) response() *http.Response {
	h, req := w.sent, w.req
	if h.Get("Content-Type") == "" && len(w.buf) > 0 && bodyAllowed(w.status) {
		h.Set("Content-Type", http.DetectContentType(w.buf))
	}
	if h.Get("Date") == "" {
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	resp := &http.Response{
		StatusCode: w.status, ProtoMajor: 1, ProtoMinor: 1, Header: h, Request: req,
		Close: req.Close || h.Get("Connection") == "close",
	}
	declared, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64)
	if err != nil {
		declared = -1
	}
	switch {
	case !bodyAllowed(w.status):
	case req.Method == http.MethodHead:
		// The length a GET would get. net/http's server sends none for a
		// body it did not buffer, but Response.Write cannot leave it out
		// without closing the connection.
		resp.ContentLength = max(declared, w.written)
	case !w.streaming:
		resp.ContentLength, resp.Body = int64(len(w.buf)), io.NopCloser(bytes.NewReader(w.buf))
	default:
		resp.ContentLength = declared
		resp.Body = io.NopCloser(io.MultiReader(bytes.NewReader(w.buf), w.pr))
		if declared < 0 && req.ProtoAtLeast(1, 1) {
			resp.TransferEncoding = []string{"chunked"}
		} else if declared < 0 {
			resp.Close = true // HTTP/1.0: the body ends with the connection
		}
	}
	if resp.Close {
		h.Set("Connection", "close")
	} else if !req.ProtoAtLeast(1, 1) {
		h.Set("Connection", "keep-alive")
	}
	return resp
}
