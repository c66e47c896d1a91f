package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The core (Config.PlainCore: net/http, httputil.ReverseProxy, io.Copy) is
// the reference; these tests send the same bytes through a proxy on the core
// and one with the fast path, and compare what the backend and the client
// see. Known, deliberate divergences are listed in the skips of the
// fast-path tests (TestPlainCoreSuite's report), not here.

// echoSeen is what the differential backend saw of a request.
type echoSeen struct {
	Method, URI, Proto string
	Header             http.Header
	Body               string
	Trailer            http.Header
}

func startEchoBackend(t testing.TB) Target {
	t.Helper()
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h := r.Header.Clone()
		// Hop-by-hop and per-connection details are each proxy's own.
		for _, k := range []string{"Connection", "Keep-Alive", "Te"} {
			h.Del(k)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Backend", "echo")
		json.NewEncoder(w).Encode(echoSeen{Method: r.Method, URI: r.RequestURI, Proto: r.Proto, Header: h, Body: string(body), Trailer: r.Trailer})
	}))
	t.Cleanup(be.Close)
	return Target{Scheme: SchemeHTTP, Addr: strings.TrimPrefix(be.URL, "http://")}
}

// exchangeRaw sends raw on a new TLS connection to addr and reads one
// response to method.
func exchangeRaw(t *testing.T, f *fixture, addr, method, raw string) (status int, header http.Header, body string) {
	t.Helper()
	c := dialH1(t, f, addr)
	defer c.c.Close()
	c.send(raw)
	r, b := c.read(method)
	return r.StatusCode, r.Header, b
}

// TestCoreAndFastPathAgreeOnRequests: the backend sees the same request
// (method, target, headers, body, trailers) and the client the same answer,
// whichever path carried it.
func TestCoreAndFastPathAgreeOnRequests(t *testing.T) {
	if *plainCore {
		t.Skip("compares the two paths itself")
	}
	f := newFixture(t)
	be := startEchoBackend(t)
	_, core := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: be, PlainCore: true})
	_, fast := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: be})
	for _, tc := range []struct{ name, method, raw string }{
		{"get", "GET", "GET /a?b=c&d HTTP/1.1\r\nHost: app.test\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n"},
		{"head", "HEAD", "HEAD /h HTTP/1.1\r\nHost: app.test\r\n\r\n"},
		{"post with length", "POST", "POST /p HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"},
		{"chunked post with trailer", "POST", "POST /c HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3\r\nabc\r\n0\r\nX-T: v\r\n\r\n"},
		{"repeated headers", "GET", "GET /r HTTP/1.1\r\nHost: app.test\r\nX-A: 1\r\nX-A: 2\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n"},
		{"client forwarding headers", "GET", "GET /x HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil\r\nX-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n\r\n"},
		{"underscore header", "GET", "GET /u HTTP/1.1\r\nHost: app.test\r\nX_Under: 1\r\n\r\n"},
		{"connection-listed header", "GET", "GET /k HTTP/1.1\r\nHost: app.test\r\nConnection: X-Hop\r\nX-Hop: 1\r\n\r\n"},
		{"expect continue", "POST", "POST /e HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nok"},
		{"http/1.0", "GET", "GET /old HTTP/1.0\r\nHost: app.test\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs, ch, cb := exchangeRaw(t, f, core, tc.method, tc.raw)
			fs, fh, fb := exchangeRaw(t, f, fast, tc.method, tc.raw)
			if cs != fs || cb != fb {
				t.Errorf("core: %d %s\nfast: %d %s", cs, cb, fs, fb)
			}
			for _, k := range []string{"Content-Type", "X-Backend", "Content-Length"} {
				if ch.Get(k) != fh.Get(k) {
					t.Errorf("header %s: core %q, fast %q", k, ch.Get(k), fh.Get(k))
				}
			}
		})
	}
}

// TestCoreAndFastPathAgreeOnResponses: each way a backend frames a response
// reaches the client with the same status, headers, body and trailer.
func TestCoreAndFastPathAgreeOnResponses(t *testing.T) {
	if *plainCore {
		t.Skip("compares the two paths itself")
	}
	f := newFixture(t)
	for _, tc := range []struct{ name, method, resp string }{
		{"content-length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello"},
		{"chunked with trailer", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3\r\nabc\r\n0\r\nX-T: end\r\n\r\n"},
		{"no content", "GET", "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"},
		{"not modified", "GET", "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"},
		{"head with length", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n"},
		{"early hints", "GET", "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{"error status", "GET", "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nRetry-After: 5\r\n\r\nbusy"},
		{"set-cookie twice", "GET", "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got [2]string
			for i, plain := range []bool{true, false} {
				be := scriptedBackend(t, tc.resp)
				_, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: be.target(), PlainCore: plain})
				c := dialH1(t, f, addr)
				c.send(tc.method + " /r HTTP/1.1\r\nHost: app.test\r\n\r\n")
				if strings.Contains(tc.resp, " 103 ") {
					if r, _ := c.read(tc.method); r.StatusCode != 103 {
						t.Fatalf("plain=%v: first response %d, want 103", plain, r.StatusCode)
					}
				}
				r, body := c.read(tc.method)
				c.c.Close()
				keys := []string{"Content-Length", "X-A", "Etag", "Retry-After"}
				var hs []string
				for _, k := range keys {
					hs = append(hs, k+"="+r.Header.Get(k))
				}
				hs = append(hs, "Set-Cookie="+strings.Join(r.Header.Values("Set-Cookie"), ","))
				slices.Sort(hs)
				got[i] = strings.Join([]string{r.Status, strings.Join(hs, ";"), body, "trailer=" + r.Trailer.Get("X-T")}, " | ")
			}
			if got[0] != got[1] {
				t.Errorf("core: %s\nfast: %s", got[0], got[1])
			}
		})
	}
}

// TestCoreAndFastPathAgreeOnHalfCloseAndShutdown: in tcp mode a client's
// half-close reaches the backend and the backend's answer still reaches the
// client; on Shutdown an idle keep-alive connection is closed within the
// drain deadline. Same on both paths.
func TestCoreAndFastPathAgreeOnHalfCloseAndShutdown(t *testing.T) {
	if *plainCore {
		t.Skip("compares the two paths itself")
	}
	f := newFixture(t)
	for _, plain := range []bool{true, false} {
		// Half-close: the backend answers what it read once it sees EOF.
		be := startTCPBackend(t, func(c net.Conn) {
			b, _ := io.ReadAll(c)
			c.Write([]byte("got:" + string(b)))
		})
		_, addr := startProxy(t, Config{Certs: f.store, Default: be.target(), PlainCore: plain})
		c := dialTLS(t, addr, f.clientTLS("app.test"))
		c.Write([]byte("abc"))
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if b, err := io.ReadAll(c); err != nil || string(b) != "got:abc" {
			t.Errorf("plain=%v: half-close: %q, %v; want got:abc", plain, b, err)
		}
		c.Close()

		// Shutdown with an idle keep-alive http connection.
		hb := startEchoBackend(t)
		s, haddr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: hb, PlainCore: plain})
		h := dialH1(t, f, haddr)
		h.send("GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
		if r, _ := h.read("GET"); r.StatusCode != 200 {
			t.Fatalf("plain=%v: %d", plain, r.StatusCode)
		}
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			done <- s.Shutdown(ctx)
		}()
		h.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := h.br.ReadByte(); err == nil {
			t.Errorf("plain=%v: the idle connection got bytes on Shutdown, want a close", plain)
		}
		if err := <-done; err != nil {
			t.Errorf("plain=%v: Shutdown: %v", plain, err)
		}
	}
}

// FuzzCoreAndFastPath sends one fuzzed request through a proxy on the core
// and one with the fast path: the client gets the same status and body (the
// echo backend's account of what it received) from both, or no response from
// both. Transfer-Encoding requests are left out: there the two answer
// differently on purpose (400 where net/http answers 501 or lets
// Transfer-Encoding win; see TestPlainCoreSuite's skips).
func FuzzCoreAndFastPath(f *testing.F) {
	if *plainCore {
		f.Skip("compares the two paths itself")
	}
	fx := newFixture(f)
	be := startEchoBackend(f)
	_, core := startProxy(f, Config{Certs: fx.store, Mode: ModeHTTP, Default: be, PlainCore: true})
	_, fast := startProxy(f, Config{Certs: fx.store, Mode: ModeHTTP, Default: be})
	f.Add("GET", "/a?b=c", "Accept", "*/*", "")
	f.Add("POST", "/p", "Content-Type", "text/plain", "hello")
	f.Add("DELETE", "/x%20y", "X_Under", "1", "")
	f.Add("GET", "/", "Connection", "close, X-Hop", "")
	f.Add("PUT", "/q?", "Expect", "100-continue", "ok")
	f.Add("OPTIONS", "*", "Cookie", "a=1", "")
	f.Fuzz(func(t *testing.T, method, target, name, value, body string) {
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "transfer-encoding":
			return
		case "content-length", "expect":
			// Both sides would wait for a body that never comes: equal,
			// and only slow.
			return
		}
		if len(body) > 1<<10 {
			return
		}
		raw := method + " " + target + " HTTP/1.1\r\nHost: app.test\r\n" + name + ": " + value + "\r\n"
		if body != "" {
			raw += "Content-Length: " + strconv.Itoa(len(body)) + "\r\n"
		}
		raw += "\r\n" + body
		if len(raw) > 4<<10 {
			// Past one small write, a proxy that rejects the head early
			// closes while the client still writes: "write failed" or the
			// answer then depends on timing, not on the path.
			return
		}
		c := tryExchange(t, fx, core, method, raw)
		p := tryExchange(t, fx, fast, method, raw)
		if c == "write failed" || p == "write failed" {
			return // the proxy closed while the client wrote: timing, not the path
		}
		if c != p {
			t.Fatalf("%q:\ncore: %s\nfast: %s", raw, c, p)
		}
	})
}

// tryExchange is exchangeRaw that reports a missing response as a result.
func tryExchange(t *testing.T, f *fixture, addr, method, raw string) string {
	c := dialTLS(t, addr, f.clientTLS("app.test", "http/1.1"))
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second)) // both paths answer in milliseconds; a timeout is "no response"
	if _, err := io.WriteString(c, raw); err != nil {
		return "write failed"
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		return "no response"
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Sprintf("%d, body cut: %v", resp.StatusCode, err)
	}
	return fmt.Sprintf("%d %s", resp.StatusCode, b)
}
