package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawH1 sends raw bytes over a TLS connection that negotiated http/1.1 and
// reads responses with net/http's parser.
type rawH1 struct {
	t  *testing.T
	c  *tls.Conn
	br *bufio.Reader
}

func dialH1(t *testing.T, f *fixture, addr string) *rawH1 {
	t.Helper()
	c := dialTLS(t, addr, f.clientTLS("app.test", "http/1.1"))
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawH1{t: t, c: c, br: bufio.NewReader(c)}
}

func (r *rawH1) send(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.c, s); err != nil {
		r.t.Fatalf("writing %q: %v", s, err)
	}
}

// read reads one response to a request with method.
func (r *rawH1) read(method string) (*http.Response, string) {
	r.t.Helper()
	resp, err := http.ReadResponse(r.br, &http.Request{Method: method})
	if err != nil {
		r.t.Fatalf("reading the response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatalf("reading the body of %d: %v", resp.StatusCode, err)
	}
	return resp, string(body)
}

func decodeSeen(t *testing.T, body string) seenRequest {
	t.Helper()
	var s seenRequest
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("backend answer %q: %v", body, err)
	}
	return s
}

// TestH1FastPath: pipelined plain requests are answered in order by the fast
// path with the headers ReverseProxy would set, and a request outside its
// subset (evidence, then a chunked upload) hands the connection to net/http
// mid-stream without losing the requests queued behind it.
func TestH1FastPath(t *testing.T) {
	skipOnPlainCore(t, "fast path counters")
	checkGoroutines(t)
	f := newFixture(t)
	app := startHTTPBackend(t, "app")
	s, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: app.target(), Evidence: evidenceHandler()})
	c := dialH1(t, f, addr)
	c.send("GET /one?q=1 HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: http\r\nForwarded: for=6.6.6.6\r\nKeep-Alive: 5\r\nX-App: a\r\n\r\n" +
		"POST /two HTTP/1.1\r\nHost: app.test:443\r\nContent-Length: 5\r\n\r\nhello" +
		"HEAD /three HTTP/1.1\r\nHost: app.test\r\n\r\n")
	resp, body := c.read("GET")
	seen := decodeSeen(t, body)
	if resp.StatusCode != 200 || seen.Path != "/one" || seen.Method != "GET" || seen.Host != "app.test" {
		t.Fatalf("first: %d %+v", resp.StatusCode, seen)
	}
	for name, want := range map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.test", "X-App": "a", "Forwarded": "", "Keep-Alive": ""} {
		if got := strings.Join(seen.Header[name], ","); got != want {
			t.Errorf("backend saw %s %q, want %q", name, got, want)
		}
	}
	resp, body = c.read("POST")
	if seen := decodeSeen(t, body); seen.Method != "POST" || seen.Path != "/two" || seen.Host != "app.test:443" || seen.Header.Get("X-Forwarded-Host") != "app.test:443" {
		t.Errorf("second: %d %+v", resp.StatusCode, seen)
	}
	resp, body = c.read("HEAD")
	if resp.StatusCode != 200 || body != "" {
		t.Errorf("HEAD: %d with %q", resp.StatusCode, body)
	}
	if n := s.stats.h1Fast.Load(); n != 3 || s.stats.h1Handoffs.Load() != 0 {
		t.Fatalf("fast path answered %d requests, handed off %d connections; want 3 and 0", n, s.stats.h1Handoffs.Load())
	}
	if got := s.Stats().BytesToBackends; got != 5 {
		t.Errorf("BytesToBackends %d, want 5", got)
	}

	// Evidence, a chunked upload and a plain GET, pipelined: the first hands
	// the connection over, and net/http answers all three in order.
	c.send("GET /evidences/quote.json HTTP/1.1\r\nHost: app.test\r\n\r\n" +
		"POST /up HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" +
		"GET /after HTTP/1.1\r\nHost: app.test\r\n\r\n")
	if resp, body := c.read("GET"); resp.StatusCode != 200 || !strings.Contains(body, `"quote"`) {
		t.Fatalf("evidence after the hand-off: %d %q", resp.StatusCode, body)
	}
	if _, body := c.read("POST"); decodeSeen(t, body).Path != "/up" {
		t.Errorf("chunked upload: %q", body)
	}
	if resp, body := c.read("GET"); decodeSeen(t, body).Path != "/after" || decodeSeen(t, body).Header.Get("X-Forwarded-Proto") != "https" || resp.StatusCode != 200 {
		t.Errorf("after the hand-off: %d %q (X-Forwarded-Proto must stay https)", resp.StatusCode, body)
	}
	if s.stats.h1Handoffs.Load() != 1 || s.stats.h1Fast.Load() != 3 {
		t.Errorf("fast %d, handoffs %d; want 3 and 1", s.stats.h1Fast.Load(), s.stats.h1Handoffs.Load())
	}
	c.c.Close()
}

// TestH1NotPlainGoesToNetHTTP: every request outside the fast path's subset
// gets what net/http answers (it did before the fast path existed), and
// nothing ambiguous reaches the backend.
func TestH1NotPlainGoesToNetHTTP(t *testing.T) {
	skipOnPlainCore(t, "hand-off from the fast path")
	checkGoroutines(t)
	f := newFixture(t)
	app := startHTTPBackend(t, "app")
	for _, tc := range []struct {
		name, req string
		status    int // 0: whatever net/http says, as long as the backend's answer says path
		path      string
	}{
		{"two lengths", "POST /x HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400, ""},
		{"signed length", "POST /x HTTP/1.1\r\nHost: app.test\r\nContent-Length: +3\r\n\r\nabc", 400, ""},
		{"obs-fold", "GET /x HTTP/1.1\r\nHost: app.test\r\nX-A: a\r\n b\r\n\r\n", 200, "/x"}, // net/http unfolds it
		{"space before colon", "GET /x HTTP/1.1\r\nHost : app.test\r\n\r\n", 400, ""},
		{"two hosts", "GET /x HTTP/1.1\r\nHost: app.test\r\nHost: other.test\r\n\r\n", 400, ""},
		{"no host", "GET /x HTTP/1.1\r\n\r\n", 400, ""},
		{"bad escape", "GET /%zz HTTP/1.1\r\nHost: app.test\r\n\r\n", 400, ""},
		{"control in value", "GET /x HTTP/1.1\r\nHost: app.test\r\nX-A: a\x01b\r\n\r\n", 400, ""},
		{"HTTP/1.0", "GET /ten HTTP/1.0\r\nHost: app.test\r\n\r\n", 200, "/ten"},
		{"bare LF", "GET /lf HTTP/1.1\nHost: app.test\n\n", 200, "/lf"},
		{"absolute form", "GET https://app.test/abs HTTP/1.1\r\nHost: app.test\r\n\r\n", 200, "/abs"},
		{"escaped path", "GET /%61b HTTP/1.1\r\nHost: app.test\r\n\r\n", 200, "/ab"},
		{"expect", "POST /e HTTP/1.1\r\nHost: app.test\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok", 0, "/e"},
		{"big body", "POST /big HTTP/1.1\r\nHost: app.test\r\nContent-Length: 70000\r\n\r\n" + strings.Repeat("b", 70000), 200, "/big"},
		// Over MaxHeaderBytes: net/http's own limit (4 KiB more) decides.
		{"head large", "GET /x HTTP/1.1\r\nHost: app.test\r\nX-Big: " + strings.Repeat("a", 5000) + "\r\n\r\n", 200, "/x"},
		{"head too large", "GET /x HTTP/1.1\r\nHost: app.test\r\nX-Big: " + strings.Repeat("a", 10000) + "\r\n\r\n", 431, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: app.target(), MaxHeaderBytes: 4096})
			c := dialH1(t, f, addr)
			defer c.c.Close()
			c.send(tc.req)
			resp, body := c.read("GET")
			if tc.status != 0 && resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (body %.200q)", resp.StatusCode, tc.status, body)
			}
			if tc.path != "" {
				if resp.StatusCode == 200 {
					if got := decodeSeen(t, body).Path; got != tc.path {
						t.Errorf("backend saw %q, want %q", got, tc.path)
					}
				}
			}
			if s.stats.h1Fast.Load() != 0 || s.stats.h1Handoffs.Load() != 1 {
				t.Errorf("fast %d, handoffs %d; want 0 and 1", s.stats.h1Fast.Load(), s.stats.h1Handoffs.Load())
			}
		})
	}
}

// TestH1Unrouted: a Host with no route and no default is net/http's 421.
func TestH1Unrouted(t *testing.T) {
	skipOnPlainCore(t, "fast path counters")
	checkGoroutines(t)
	f := newFixture(t)
	app := startHTTPBackend(t, "app")
	s, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Routes: []Route{{Host: "app.test", Target: app.target()}}})
	c := dialH1(t, f, addr)
	defer c.c.Close()
	c.send("GET /x HTTP/1.1\r\nHost: nowhere.test\r\n\r\n")
	if r, _ := c.read("GET"); r.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("status %d, want 421", r.StatusCode)
	}
	if s.Stats().Unrouted != 1 || s.stats.h1Handoffs.Load() != 1 {
		t.Errorf("unrouted %d, handoffs %d; want 1 and 1", s.Stats().Unrouted, s.stats.h1Handoffs.Load())
	}
}

// scriptedBackend answers every request on a connection with the next of
// resps, verbatim, reading only the request head (the tests send no bodies).
func scriptedBackend(t *testing.T, resps ...string) *tcpBackend {
	return startTCPBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for _, r := range resps {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			if _, err := io.WriteString(c, r); err != nil {
				return
			}
		}
	})
}

// TestH1ResponseFraming: each way a backend can frame its response reaches
// the client intact, and the backend connection is reused exactly when the
// framing allows it.
func TestH1ResponseFraming(t *testing.T) {
	skipOnPlainCore(t, "fast path framing (net/http re-chunks a close-delimited body and keeps the client connection)")
	checkGoroutines(t)
	f := newFixture(t)
	for _, tc := range []struct {
		name, method, resp string
		informational      int // a 1xx the client sees first
		body               string
		trailer            string // X-T in the client's trailer
		reuse, clientClose bool
	}{
		{"content-length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 0, "hello", "", true, false},
		{"chunked with trailer", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: end\r\n\r\n", 0, "abcde", "end", true, false},
		{"chunked and length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n", 0, "z", "", true, false},
		{"no content", "GET", "HTTP/1.1 204 No Content\r\n\r\n", 0, "", "", true, false},
		{"not modified", "GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", 0, "", "", true, false},
		{"head", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", 0, "", "", true, false},
		{"early hints", "GET", "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 103, "ok", "", true, false},
		{"backend closes", "GET", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 0, "ok", "", false, false},
		{"HTTP/1.0 backend", "GET", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 0, "ok", "", false, false},
		{"until close", "GET", "HTTP/1.1 200 OK\r\n\r\nstream until close", 0, "stream until close", "", false, true},
		// Past the first read's 16 KiB: the head, then the body.
		{"large head", "GET", "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("h", 30<<10) + "\r\nContent-Length: 2\r\n\r\nok", 0, "ok", "", true, false},
		{"large body", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("b", 100000), 0, strings.Repeat("b", 100000), "", true, false},
		{"large chunked body", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n186a0\r\n" + strings.Repeat("c", 100000) + "\r\n0\r\n\r\n", 0, strings.Repeat("c", 100000), "", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Two responses per backend connection when it stays open.
			resps := []string{tc.resp, tc.resp}
			if tc.clientClose {
				resps = resps[:1] // then the backend closes: the end of the body
			}
			be := scriptedBackend(t, resps...)
			_, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: be.target()})
			c := dialH1(t, f, addr)
			defer c.c.Close()
			for i := 0; i < 2; i++ {
				c.send(tc.method + " /r HTTP/1.1\r\nHost: app.test\r\n\r\n")
				if tc.informational != 0 {
					if r, _ := c.read(tc.method); r.StatusCode != tc.informational || r.Header.Get("Link") != "</s.css>" {
						t.Fatalf("request %d: first response %d %v, want %d with its Link", i, r.StatusCode, r.Header, tc.informational)
					}
				}
				r, body := c.read(tc.method)
				if body != tc.body || r.Trailer.Get("X-T") != tc.trailer {
					t.Fatalf("request %d: body %q trailer %q, want %q %q", i, body, r.Trailer.Get("X-T"), tc.body, tc.trailer)
				}
				if r.Close != tc.clientClose {
					t.Fatalf("request %d: client told close=%v, want %v", i, r.Close, tc.clientClose)
				}
				if tc.clientClose {
					return
				}
			}
			want := int64(1)
			if !tc.reuse {
				want = 2
			}
			if n := be.count.Load(); n != want {
				t.Errorf("%d backend connections for two requests, want %d", n, want)
			}
		})
	}
}

// TestH1BadBackendResponses: a response we cannot frame is a 502 and the
// client connection stays usable; a body that breaks off ends the client
// connection (a truncated body must not look complete).
func TestH1BadBackendResponses(t *testing.T) {
	skipOnPlainCore(t, "fast path's strict response parser (httputil.ReverseProxy passes a gzip-coded or HTTP/1.0 chunked response on with 200)")
	checkGoroutines(t)
	f := newFixture(t)
	good := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	for _, tc := range []struct{ name, resp string }{
		{"garbage", "SSH-2.0-OpenSSH\r\n\r\n"},
		{"bad status", "HTTP/1.1 2x0 OK\r\n\r\n"},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"},
		{"gzip coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"},
		{"unasked switch", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"},
		{"huge head", "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 70000) + "\r\n\r\n"},
		{"closed at once", ""},
		{"chunked HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := startTCPBackend(t, func(c net.Conn) {
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, tc.resp)
			})
			ok := scriptedBackend(t, good)
			s, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: be.target(),
				Routes: []Route{{Host: "other.test", Target: ok.target()}}})
			c := dialH1(t, f, addr)
			defer c.c.Close()
			c.send("GET /r HTTP/1.1\r\nHost: app.test\r\n\r\n")
			if r, _ := c.read("GET"); r.StatusCode != http.StatusBadGateway {
				t.Fatalf("status %d, want 502", r.StatusCode)
			}
			c.send("GET /r HTTP/1.1\r\nHost: other.test\r\n\r\n")
			if r, body := c.read("GET"); r.StatusCode != 200 || body != "ok" {
				t.Fatalf("next request on the same connection: %d %q", r.StatusCode, body)
			}
			if s.Stats().BackendErrors != 1 {
				t.Errorf("BackendErrors %d, want 1", s.Stats().BackendErrors)
			}
		})
	}
	for _, tc := range []struct{ name, resp string }{
		{"short body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"},
		{"bad chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n"},
		{"chunk cut", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := startTCPBackend(t, func(c net.Conn) {
				if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
					io.WriteString(c, tc.resp)
				}
			})
			_, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: be.target()})
			c := dialH1(t, f, addr)
			defer c.c.Close()
			c.send("GET /r HTTP/1.1\r\nHost: app.test\r\n\r\n")
			resp, err := http.ReadResponse(c.br, nil)
			if err != nil {
				t.Fatalf("head: %v", err)
			}
			// Broken in the first read: nothing was sent yet, so 502.
			// Later: the connection ends and the body cannot look whole.
			if _, err := io.ReadAll(resp.Body); err == nil && resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("the broken body read as complete (status %d)", resp.StatusCode)
			}
		})
	}
}

// TestH1StalePooledConnection: a backend that closes a keep-alive connection
// while it is idle in the pool costs the client nothing: the request is
// retried once on a new connection.
func TestH1StalePooledConnection(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	be := startTCPBackend(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
			// Says nothing of closing, then closes: the proxy pools it.
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	s, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: be.target()})
	c := dialH1(t, f, addr)
	defer c.c.Close()
	for i := 0; i < 3; i++ {
		// Wait for the backend's close to arrive, so that the pooled
		// connection is stale for certain when it is used.
		waitFor(t, 5*time.Second, "the backend to close its connections", func() bool {
			be.mu.Lock()
			defer be.mu.Unlock()
			return len(be.conns) == 0
		})
		c.send("GET /r HTTP/1.1\r\nHost: app.test\r\n\r\n")
		if r, body := c.read("GET"); r.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, r.StatusCode, body)
		}
	}
	if st := s.Stats(); st.BackendErrors != 0 {
		t.Errorf("BackendErrors %d, want 0 (stale connections are retried)", st.BackendErrors)
	}
	if n := be.count.Load(); n < 3 {
		t.Errorf("%d backend connections, want a new one per request", n)
	}
}

// TestH1ClientGoneIsNotABackendError: a client that leaves before its
// response is written ends its connection without counting against the
// backend.
func TestH1ClientGoneIsNotABackendError(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	clientGone := make(chan struct{})
	big := strings.Repeat("z", 4<<20)
	be := startTCPBackend(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		<-clientGone
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+fmt.Sprint(len(big))+"\r\n\r\n"+big)
	})
	s, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: be.target()})
	c := dialH1(t, f, addr)
	c.send("GET /r HTTP/1.1\r\nHost: app.test\r\n\r\n")
	waitFor(t, 5*time.Second, "the request to reach the backend", func() bool { return be.count.Load() == 1 })
	c.c.Close()
	close(clientGone)
	waitFor(t, 10*time.Second, "the proxy to close the connection", func() bool { return s.Stats().Active == 0 })
	if st := s.Stats(); st.BackendErrors != 0 {
		t.Errorf("BackendErrors %d, want 0: the client left, the backend did nothing wrong", st.BackendErrors)
	}
}

// TestH1Shutdown: Shutdown closes an idle fast-path connection at once and
// lets a request in flight finish, telling its client the connection closes.
func TestH1Shutdown(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	be := startTCPBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if r.URL.Path == "/slow" {
				started <- struct{}{}
				<-release
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	// startProxy's cleanup checks that Serve returned ErrServerClosed.
	s, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: be.target()})
	idle := dialH1(t, f, addr)
	idle.send("GET /fast HTTP/1.1\r\nHost: app.test\r\n\r\n")
	if r, _ := idle.read("GET"); r.StatusCode != 200 {
		t.Fatalf("idle connection's request: %d", r.StatusCode)
	}
	busy := dialH1(t, f, addr)
	busy.send("GET /slow HTTP/1.1\r\nHost: app.test\r\n\r\n")
	<-started

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()
	// The idle connection is closed without waiting for the busy one.
	if _, err := idle.br.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection: %v, want EOF", err)
	}
	close(release)
	r, body := busy.read("GET")
	if body != "ok" || !r.Close {
		t.Errorf("request in flight: %q, close=%v; want ok and Connection: close", body, r.Close)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}
