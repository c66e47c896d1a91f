package h1fast

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// host is a Host for tests: one backend for every host but "other.test",
// whose requests go to net/http.
type host struct {
	backend  atomic.Value // string
	quitting atomic.Bool
	mu       sync.Mutex
	access   []string
}

func (h *host) Backend(hostname, path []byte) (string, bool) {
	if string(hostname) == "other.test" {
		return "", false
	}
	return h.backend.Load().(string), true
}

func (h *host) log() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.access...)
}

func (h *host) Dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

func (h *host) Quitting() bool { return h.quitting.Load() }

func (h *host) Access(method, hostname, path string, status int, sent int64, took time.Duration, backend, client string) {
	h.mu.Lock()
	h.access = append(h.access, method+" "+path+" "+http.StatusText(status)+" "+client)
	h.mu.Unlock()
}

// world is an Engine serving TLS connections on loopback, with the
// connections it handed off.
type world struct {
	e        *Engine
	h        *host
	addr     string
	handoffs chan string
	backends atomic.Int64
	// /hold requests tell held they arrived and answer once release is
	// closed.
	held     chan struct{}
	release  chan struct{}
	counters struct{ fast, handoffs, toB, toC, errs atomic.Uint64 }
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{h: &host{}, handoffs: make(chan string, 4), held: make(chan struct{}, 1), release: make(chan struct{})}
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			w.held <- struct{}{}
			<-w.release
		}
		io.WriteString(rw, r.Method+" "+r.URL.RequestURI()+" xff="+r.Header.Get("X-Forwarded-For")+" xfh="+r.Header.Get("X-Forwarded-Host"))
	}))
	be.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			w.backends.Add(1)
		}
	}
	be.Start()
	t.Cleanup(be.Close)
	w.h.backend.Store(strings.TrimPrefix(be.URL, "http://"))
	c := &w.counters
	w.e = New(context.Background(), Config{MaxHeaderBytes: 8 << 10, HeaderTimeout: 5 * time.Second, ClientTimeout: 10 * time.Second,
		ServerTimeout: 10 * time.Second, AccessLog: true}, w.h, slog.New(slog.DiscardHandler),
		Counters{Fast: &c.fast, Handoffs: &c.handoffs, ToBackends: &c.toB, ToClients: &c.toC, BackendErrors: &c.errs})
	t.Cleanup(w.e.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	w.addr = ln.Addr().String()
	cfg := &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, NextProtos: []string{"http/1.1"}}
	go func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			tc := tls.Server(raw, cfg)
			go func() {
				if tc.Handshake() != nil {
					raw.Close()
					return
				}
				w.e.Serve(Client{
					TLS: tc, Conn: raw, IP: "192.0.2.7",
					Write:      func(p []byte) error { _, err := tc.Write(p); return err },
					CloseWrite: func() { raw.(*net.TCPConn).CloseWrite() },
					Handoff: func(pending []byte) {
						w.handoffs <- string(pending)
						raw.Close()
					},
				}, func(abort, kick func()) {})
			}()
		}
	}()
	return w
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "app.test"}, DNSNames: []string{"app.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (w *world) dial(t *testing.T) (*tls.Conn, *bufio.Reader) {
	t.Helper()
	c, err := tls.Dial("tcp", w.addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

func roundTrip(t *testing.T, c *tls.Conn, br *bufio.Reader, req string) (*http.Response, string) {
	t.Helper()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestForwardAndReuse: plain requests go to the backend with the client's
// address and the original host, the backend connection is pooled and
// reused, and each request is counted and logged.
func TestForwardAndReuse(t *testing.T) {
	w := newWorld(t)
	c, br := w.dial(t)
	for i, path := range []string{"/a?x=1", "/b"} {
		resp, body := roundTrip(t, c, br, "GET "+path+" HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n")
		if want := "GET " + path + " xff=192.0.2.7 xfh=app.test"; resp.StatusCode != 200 || body != want {
			t.Fatalf("request %d: %d %q, want %q", i, resp.StatusCode, body, want)
		}
	}
	if n := w.backends.Load(); n != 1 {
		t.Errorf("%d backend connections for two requests, want 1 (pooled)", n)
	}
	// The access line is written after the response: wait for the second.
	log := w.h.log()
	for deadline := time.Now().Add(10 * time.Second); len(log) < 2 && time.Now().Before(deadline); log = w.h.log() {
		time.Sleep(time.Millisecond)
	}
	if w.counters.fast.Load() != 2 || len(log) != 2 || log[0] != "GET /a OK 192.0.2.7" {
		t.Errorf("fast %d, access %q", w.counters.fast.Load(), log)
	}
}

// TestHandoff: a request outside the subset, or for a host the Host sends
// to net/http, is handed off with every byte read so far.
func TestHandoff(t *testing.T) {
	w := newWorld(t)
	for _, req := range []string{
		"GET / HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: other.test\r\n\r\nGET /next HTTP/1.1\r\n",
	} {
		c, _ := w.dial(t)
		io.WriteString(c, req)
		select {
		case got := <-w.handoffs:
			if got != req {
				t.Errorf("handed off %q, want %q", got, req)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%q was not handed off", req)
		}
	}
	if w.counters.handoffs.Load() != 2 || w.counters.fast.Load() != 0 {
		t.Errorf("handoffs %d, fast %d", w.counters.handoffs.Load(), w.counters.fast.Load())
	}
}

// TestBackendDownAndQuitting: a backend that refuses is a 502 on a
// connection that stays usable; a request in flight when the Host starts
// quitting gets its response, which closes the connection. (An idle
// connection closes at once then: the request must be in flight first.)
func TestBackendDownAndQuitting(t *testing.T) {
	w := newWorld(t)
	good := w.h.backend.Load()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	w.h.backend.Store(ln.Addr().String())
	ln.Close()
	c, br := w.dial(t)
	if resp, _ := roundTrip(t, c, br, "GET / HTTP/1.1\r\nHost: app.test\r\n\r\n"); resp.StatusCode != 502 || resp.Close {
		t.Fatalf("backend down: %d, close %v; want 502 on an open connection", resp.StatusCode, resp.Close)
	}
	w.h.backend.Store(good)
	io.WriteString(c, "GET /hold HTTP/1.1\r\nHost: app.test\r\n\r\n")
	select {
	case <-w.held:
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not reach the backend")
	}
	w.h.quitting.Store(true)
	close(w.release)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("quitting: %d, close %v; want 200 with Connection: close", resp.StatusCode, resp.Close)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("the connection stayed open after a closing response: %v", err)
	}
	if w.counters.errs.Load() != 1 {
		t.Errorf("backend errors %d, want 1", w.counters.errs.Load())
	}
}
