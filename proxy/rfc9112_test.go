package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// seenBackend answers every request with what it saw (as seenRequest, plus
// the body length) and counts the requests.
type seenBackend struct {
	*httptest.Server
	requests atomic.Int64
}

type seenWithBody struct {
	seenRequest
	BodyLen       int   `json:"body_len"`
	ContentLength int64 `json:"content_length"`
}

func startSeenBackend(t *testing.T) *seenBackend {
	b := &seenBackend{}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.requests.Add(1)
		body, _ := io.ReadAll(r.Body)
		json.NewEncoder(w).Encode(seenWithBody{seenRequest: seenRequest{Method: r.Method, Path: r.URL.Path, Header: r.Header},
			BodyLen: len(body), ContentLength: r.ContentLength})
	}))
	t.Cleanup(b.Close)
	return b
}

// TestRFC9112 answers the framing cases RFC 9112 names as RFC 9112 says, on
// the fast path (the first request of a connection) and on net/http (a
// request after the connection was handed over), and sends a backend neither
// the client's X-Real-IP nor header names with underscores.
func TestRFC9112(t *testing.T) {
	skipOnPlainCore(t, "fast path's 400 for Content-Length with Transfer-Encoding and for codings other than chunked (net/http lets Transfer-Encoding win, as RFC 9112 section 6.3 allows, and answers 501 to other codings)")
	checkGoroutines(t)
	f := newFixture(t)
	const after = "GET /after HTTP/1.1\r\nHost: app.test\r\n\r\n" // pipelined behind each case
	cases := []struct {
		name, req string
		status    int
		closed    bool // the connection ends after the answer: /after is never served
		forwarded bool // the backend got the request
		check     func(t *testing.T, s seenWithBody)
		onlyFirst bool // net/http's own framing rules apply after a hand-off (see README)
	}{
		{name: "CL and TE", req: "POST /x HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
			status: 400, closed: true, onlyFirst: true},
		{name: "TE then CL", req: "POST /x HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
			status: 400, closed: true, onlyFirst: true},
		{name: "chunked, identity", req: "POST /x HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
			status: 400, closed: true, onlyFirst: true},
		{name: "chunked then gzip lines", req: "POST /x HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n",
			status: 400, closed: true, onlyFirst: true},
		{name: "malformed chunked body", req: "POST /x HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
			status: 400, closed: true},
		{name: "chunked body", req: "POST /c HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
			status: 200, forwarded: true, check: func(t *testing.T, s seenWithBody) {
				if s.BodyLen != 5 || s.ContentLength != 5 {
					t.Errorf("backend got a body of %d bytes, Content-Length %d; want 5 and 5", s.BodyLen, s.ContentLength)
				}
			}},
		{name: "underscores and X-Real-IP", req: "GET /u HTTP/1.1\r\nHost: app.test\r\nContent_Length: 5\r\nTransfer_Encoding: chunked\r\nX_A: 1\r\nX-B: 2\r\nX-Real-IP: 6.6.6.6\r\n\r\n",
			status: 200, forwarded: true, check: func(t *testing.T, s seenWithBody) {
				for k := range s.Header {
					if strings.Contains(k, "_") {
						t.Errorf("backend got %q", k)
					}
				}
				if s.Header.Get("X-B") != "2" || s.Header.Get("X-Real-Ip") != "127.0.0.1" {
					t.Errorf("backend got X-B %q X-Real-IP %q; want 2 and the client's address", s.Header.Get("X-B"), s.Header.Get("X-Real-Ip"))
				}
			}},
	}
	for _, path := range []string{"fast path", "after hand-off"} {
		for _, tc := range cases {
			if tc.onlyFirst && path != "fast path" {
				continue
			}
			t.Run(path+"/"+tc.name, func(t *testing.T) {
				be := startSeenBackend(t)
				_, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: Target{Scheme: SchemeHTTP, Addr: strings.TrimPrefix(be.URL, "http://")}})
				c := dialH1(t, f, addr)
				defer c.c.Close()
				if path == "after hand-off" {
					// A chunked upload hands the connection to net/http.
					c.send("POST /h HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
					if r, _ := c.read("POST"); r.StatusCode != 200 {
						t.Fatalf("hand-off request: %d", r.StatusCode)
					}
					be.requests.Store(0)
				}
				c.send(tc.req + after)
				resp, body := c.read("POST")
				if resp.StatusCode != tc.status {
					t.Fatalf("status %d, want %d (%q)", resp.StatusCode, tc.status, body)
				}
				if got := be.requests.Load() > 0; got != tc.forwarded {
					t.Fatalf("forwarded %v, want %v", got, tc.forwarded)
				}
				if tc.check != nil {
					var s seenWithBody
					if err := json.Unmarshal([]byte(body), &s); err != nil {
						t.Fatal(err)
					}
					tc.check(t, s)
				}
				c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if tc.closed {
					if rest, err := io.ReadAll(c.br); err != nil || len(rest) != 0 {
						t.Fatalf("after a %d the connection should end; got %q, %v", tc.status, rest, err)
					}
					return
				}
				if r, _ := c.read("GET"); r.StatusCode != 200 {
					t.Fatalf("pipelined request: %d", r.StatusCode)
				}
			})
		}
	}
}
