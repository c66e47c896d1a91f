package h2fast

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// What the proxy answers itself on this path (the evidence files, 421 for a
// host with no route) runs its http.Handler with a response that is
// collected, then sent: those answers are small and made at once.

// maxLocal bounds a collected local response.
const maxLocal = 8 << 20

// localWriter is the http.ResponseWriter of a local handler.
type localWriter struct {
	h      http.Header
	status int
	body   bytes.Buffer
}

func (w *localWriter) Header() http.Header { return w.h }

func (w *localWriter) WriteHeader(status int) {
	if w.status == 0 && status >= 200 {
		w.status = status
	}
}

func (w *localWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	if w.body.Len()+len(p) > maxLocal {
		return 0, io.ErrShortWrite
	}
	return w.body.Write(p)
}

// serveLocal runs h for s and sends what it wrote.
func (c *conn) serveLocal(s *stream, req *request, h http.Handler) {
	ctx, cancel := context.WithCancel(c.e.ctx)
	defer cancel()
	c.mu.Lock()
	s.cancel = cancel
	c.mu.Unlock()
	r, err := c.localRequest(ctx, s, req)
	if err != nil {
		c.respond(s, http.StatusBadRequest, "bad request: "+err.Error()+"\n")
		return
	}
	w := &localWriter{h: make(http.Header)}
	h.ServeHTTP(w, r)
	w.WriteHeader(http.StatusOK)
	noBody := req.method == http.MethodHead || w.status == 204 || w.status == 304
	if _, ok := w.h["Content-Type"]; !ok && w.body.Len() > 0 && !noBody {
		w.h.Set("Content-Type", http.DetectContentType(w.body.Bytes()))
	}
	if _, ok := w.h["Content-Length"]; !ok && !noBody {
		w.h.Set("Content-Length", strconv.Itoa(w.body.Len()))
	}
	if _, ok := w.h["Date"]; !ok {
		w.h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	blk := appendStatus(nil, w.status)
	for k, vs := range w.h {
		name := strings.ToLower(k)
		if name == "connection" || name == "transfer-encoding" || name == "keep-alive" {
			continue
		}
		for _, v := range vs {
			blk = appendField(blk, name, v)
		}
	}
	if c.writeHeaders(s, blk, noBody || w.body.Len() == 0) == nil && !noBody && w.body.Len() > 0 {
		c.writeData(s, w.body.Bytes(), true)
	}
}

// localRequest is the http.Request a local handler sees, as net/http's
// server would have made it.
func (c *conn) localRequest(ctx context.Context, s *stream, req *request) (*http.Request, error) {
	u, err := url.ParseRequestURI(req.path)
	if err != nil {
		return nil, err
	}
	h := make(http.Header, len(req.fields))
	for _, hf := range req.fields {
		h.Add(textproto.CanonicalMIMEHeaderKey(hf.Name), hf.Value)
	}
	r := (&http.Request{
		Method: req.method, URL: u, Proto: "HTTP/2.0", ProtoMajor: 2, Header: h,
		Host: req.authority, RemoteAddr: c.c.Addr, RequestURI: req.path, TLS: c.c.State,
		ContentLength: req.declared, Body: http.NoBody,
	}).WithContext(ctx)
	c.mu.Lock()
	hasBody := !s.remoteClosed || len(s.body) > 0
	c.mu.Unlock()
	if hasBody {
		r.Body = io.NopCloser(&bodyReader{c: c, s: s})
	}
	return r, nil
}

// bodyReader reads a stream's request body.
type bodyReader struct {
	c *conn
	s *stream
}

func (b *bodyReader) Read(p []byte) (int, error) { return b.c.readBody(b.s, p) }
