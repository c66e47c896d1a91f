package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestCertSwapUnderLoad(t *testing.T) {
	for _, mode := range []Mode{ModeTCP, ModeHTTP} {
		t.Run(mode.String(), func(t *testing.T) {
			checkGoroutines(t)
			f := newFixture(t)
			app := startHTTPBackend(t, "app")
			gen := make([]*tls.Certificate, 4)
			for i := range gen {
				gen[i] = f.pki.issue(t, "app.test", "*.app.test")
			}
			store := &CertStore{}
			mustf(t, store.Set("app.test", map[string]*tls.Certificate{"app.test": gen[0], "*.app.test": gen[0]}), "Set")
			_, addr := startProxy(t, Config{Certs: store, Mode: mode, Default: app.target()})

			stop := make(chan struct{})
			deadline := time.Now().Add(60 * time.Second)
			var wg sync.WaitGroup
			var okKA, okNew, failed atomic.Int64
			var firstErr atomic.Pointer[error]
			worker := func(keepAlive, h2 bool, ok *atomic.Int64) {
				defer wg.Done()
				hc := f.httpClient(addr, h2)
				hc.Transport.(*http.Transport).DisableKeepAlives = !keepAlive
				defer hc.CloseIdleConnections()
				for i := 0; i < 100000 && time.Now().Before(deadline); i++ {
					select {
					case <-stop:
						return
					default:
					}
					err := func() error {
						resp, err := hc.Get("https://app.test/load")
						if err != nil {
							return err
						}
						defer resp.Body.Close()
						body, err := io.ReadAll(resp.Body)
						if err != nil {
							return err
						}
						if resp.StatusCode != 200 || !strings.Contains(string(body), `"path":"/load"`) {
							return fmt.Errorf("status %d body %q", resp.StatusCode, body)
						}
						return nil
					}()
					if err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, &err)
						continue
					}
					ok.Add(1)
				}
			}
			for i := 0; i < 4; i++ {
				wg.Add(2)
				go worker(true, mode == ModeHTTP && i%2 == 1, &okKA)
				go worker(false, false, &okNew)
			}

			for i := 1; i <= 100; i++ {
				next := gen[i%len(gen)]
				mustf(t, store.Set("app.test", map[string]*tls.Certificate{"app.test": next, "*.app.test": next}), "swap %d", i)
				for _, sni := range []string{"app.test", "x.app.test"} {
					c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, f.clientTLS(sni))
					mustf(t, err, "handshake after swap %d", i)
					got := c.ConnectionState().PeerCertificates[0].SerialNumber
					c.Close()
					if got.Cmp(next.Leaf.SerialNumber) != 0 {
						t.Fatalf("swap %d: new handshake for %s got serial %v, want %v", i, sni, got, next.Leaf.SerialNumber)
					}
				}
			}
			close(stop)
			wg.Wait()
			if n := failed.Load(); n != 0 {
				t.Fatalf("%d failed requests during the swaps; first: %v", n, *firstErr.Load())
			}
			if okKA.Load() == 0 || okNew.Load() == 0 {
				t.Fatalf("no load ran: %d keep-alive, %d new-connection requests", okKA.Load(), okNew.Load())
			}
			t.Logf("100 swaps with %d keep-alive and %d new-connection requests, 0 failed", okKA.Load(), okNew.Load())
		})
	}
}

func TestShutdownDrainsTCP(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	be := startTCPBackend(t, echoHandler)
	s, err := New(withCore(Config{Certs: f.store, Default: be.target(), Logger: testLogger(t)}))
	mustf(t, err, "New")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	mustf(t, err, "listen")
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()

	c := dialTLS(t, ln.Addr().String(), f.clientTLS("app.test"))
	io.WriteString(c, "a")
	c.Read(make([]byte, 1))

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	// No new connections: the listener is closed. (Dialling its port to
	// see would be flaky: the port is free, and a dial whose ephemeral
	// source port happens to be that one connects to itself.)
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(time.Second)) // an open one would time out
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("listener still open during drain: Accept returned %v", err)
	}
	// ... while the open one still works, including its half-close.
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a connection open", err)
	default:
	}
	io.WriteString(c, "b")
	c.CloseWrite()
	if got, err := readAllWithin(t, c, 10*time.Second); err != nil || string(got) != "bbye" {
		t.Fatalf("during drain: %q %v", got, err)
	}
	c.Close()
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := s.Serve(ln); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}

func TestShutdownDeadlineClosesConnections(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	be := startTCPBackend(t, func(c net.Conn) { io.Copy(c, c) })
	app := startHTTPBackend(t, "app")
	for _, mode := range []Mode{ModeTCP, ModeHTTP} {
		target := be.target()
		if mode == ModeHTTP {
			target = app.target()
		}
		s, err := New(withCore(Config{Certs: f.store, Mode: mode, Default: target, Evidence: evidenceHandler()}))
		mustf(t, err, "New")
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		served := make(chan error, 1)
		go func() { served <- s.Serve(ln) }()
		// An idle keep-alive connection in each state: through to the backend,
		// in evidence mode, and (http mode) idle between requests.
		c1 := dialTLS(t, ln.Addr().String(), f.clientTLS("app.test", "http/1.1"))
		io.WriteString(c1, "GET /evidences/quote.json HTTP/1.1\r\nHost: app.test\r\n\r\n")
		readResponse(t, bufioReader(c1), "GET")
		c2 := dialTLS(t, ln.Addr().String(), f.clientTLS("app.test", "http/1.1"))
		io.WriteString(c2, "GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
		c2.SetReadDeadline(time.Now().Add(10 * time.Second))
		c2.Read(make([]byte, 1))
		waitFor(t, 5*time.Second, "two active connections", func() bool { return s.Stats().Active == 2 })

		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		start := time.Now()
		err = s.Shutdown(ctx)
		cancel()
		if mode == ModeTCP && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("tcp Shutdown: %v, want DeadlineExceeded (the connections were open)", err)
		}
		if mode == ModeHTTP && err != nil {
			t.Fatalf("http Shutdown: %v, want nil (idle keep-alive connections are closed at once)", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("Shutdown took %v", d)
		}
		if st := s.Stats(); st.Active != 0 {
			t.Fatalf("after Shutdown: %+v", st)
		}
		for _, c := range []*tls.Conn{c1, c2} {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadAll(c); err != nil && !strings.Contains(err.Error(), "reset") {
				t.Fatalf("client after forced close: %v", err)
			}
		}
		<-served
	}
}

func TestShutdownWaitsForHTTPRequest(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	release := make(chan struct{})
	entered := make(chan struct{})
	be := startH2CBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "finished")
	}))
	s, err := New(withCore(Config{Certs: f.store, Mode: ModeHTTP, Default: Target{Addr: strings.TrimPrefix(be.URL, "http://")}}))
	mustf(t, err, "New")
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(ln)
	hc := f.httpClient(ln.Addr().String(), true)
	defer hc.CloseIdleConnections()
	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := hc.Get("https://app.test/slow")
		if err != nil {
			got <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- result{string(b), err}
	}()
	<-entered
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	waitFor(t, 5*time.Second, "listener closed", func() bool {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	close(release)
	if r := <-got; r.err != nil || r.body != "finished" {
		t.Fatalf("in-flight request during drain: %q %v", r.body, r.err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}
