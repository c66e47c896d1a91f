package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// Idle tcp-mode connections are parked with the watcher: they hold no
// goroutine, so a thousand idle TLS connections cost a thousand small heap
// objects, not two thousand stacks.
func TestIdleConnectionsHoldNoGoroutine(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the watcher needs epoll")
	}
	checkGoroutines(t)
	f := newFixture(t)
	be := startTCPBackend(t, func(c net.Conn) { io.Copy(c, c) })
	s, addr := startProxy(t, Config{Certs: f.store, Default: be.target(), Evidence: evidenceHandler()})
	// The backend's per-connection handler goroutines are ours too: count them
	// out by measuring after the backend has accepted.
	const n = 50
	var conns []*tls.Conn
	for i := 0; i < n; i++ {
		conns = append(conns, dialTLS(t, addr, f.clientTLS("app.test")))
	}
	waitFor(t, 5*time.Second, "all connections through to the backend", func() bool {
		return s.Stats().Active == n && be.count.Load() == n
	})
	base := runtime.NumGoroutine() // includes the backend's n handlers
	// Goroutines start when a side speaks, and the parked ones cost none.
	waitFor(t, 5*time.Second, "goroutines to settle", func() bool { return runtime.NumGoroutine() <= base })
	if g := runtime.NumGoroutine(); g > base {
		t.Fatalf("%d goroutines with %d idle connections (base %d)", g, n, base)
	}
	// Idle connections wake up when used.
	for i, c := range conns {
		if i%10 != 0 {
			continue
		}
		io.WriteString(c, "ping")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("connection %d after idling: %q %v", i, buf, err)
		}
	}
}

func TestIdleTimeoutOfParkedConnection(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	be := startTCPBackend(t, hangHandler)
	const timeout = 300 * time.Millisecond
	for _, withEvidence := range []bool{false, true} {
		cfg := Config{Certs: f.store, Default: be.target(), ClientTimeout: timeout, ServerTimeout: 10 * time.Second}
		if withEvidence {
			cfg.Evidence = evidenceHandler()
		}
		_, addr := startProxy(t, cfg)
		c := dialTLS(t, addr, f.clientTLS("app.test"))
		start := time.Now()
		// Neither side says anything: the idle timeout (the smaller of the two)
		// closes the connection cleanly.
		got, err := readAllWithin(t, c, 10*time.Second)
		elapsed := time.Since(start)
		if err != nil || len(got) != 0 || elapsed < timeout-50*time.Millisecond || elapsed > timeout+5*time.Second {
			t.Fatalf("evidence=%v: read %q, %v after %v; want a clean close after about %v", withEvidence, got, err, elapsed, timeout)
		}
	}
}

// With the backend down, a silent client gets HeaderTimeout to ask for
// evidence, then a clean close.
func TestSilentClientWhileBackendDown(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	const timeout = 300 * time.Millisecond
	_, addr := startProxy(t, Config{Certs: f.store, Default: Target{Addr: refusedAddr(t)}, Evidence: evidenceHandler(), HeaderTimeout: timeout})
	c := dialTLS(t, addr, f.clientTLS("app.test"))
	start := time.Now()
	got, err := readAllWithin(t, c, 10*time.Second)
	if elapsed := time.Since(start); err != nil || len(got) != 0 || elapsed > timeout+5*time.Second {
		t.Fatalf("read %q, %v after %v", got, err, elapsed)
	}
}

// coalescingConn holds back every write after the first (the ClientHello)
// until flush, so that the client's Finished and its first application data
// reach the server in one segment: crypto/tls then has the data buffered when
// the handshake returns, and no socket readiness will announce it.
type coalescingConn struct {
	net.Conn
	mu      sync.Mutex
	writes  int
	pending []byte
}

func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	if c.writes == 1 {
		return c.Conn.Write(p)
	}
	c.pending = append(c.pending, p...)
	return len(p), nil
}

func (c *coalescingConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := c.Conn.Write(c.pending)
	c.pending = nil
	c.writes = 1 << 30 // from now on, gather nothing: see Write
	return err
}

func TestDataBufferedWithHandshake(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	be := startTCPBackend(t, func(c net.Conn) { io.Copy(c, c) })
	for _, withEvidence := range []bool{false, true} {
		cfg := Config{Certs: f.store, Default: be.target()}
		if withEvidence {
			cfg.Evidence = evidenceHandler()
		}
		_, addr := startProxy(t, cfg)
		raw, err := net.Dial("tcp", addr)
		mustf(t, err, "dial")
		cc := &coalescingConn{Conn: raw}
		c := tls.Client(cc, f.clientTLS("app.test"))
		c.SetDeadline(time.Now().Add(10 * time.Second))
		mustf(t, c.Handshake(), "handshake")
		io.WriteString(c, "early data")
		mustf(t, cc.flush(), "flush")
		buf := make([]byte, len("early data"))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "early data" {
			t.Fatalf("evidence=%v: echo of data sent with the Finished: %q %v", withEvidence, buf, err)
		}
		c.Close()
	}
}

func TestShutdownClosesParkedConnections(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	be := startTCPBackend(t, func(c net.Conn) { io.Copy(c, c) })
	s, err := New(withCore(Config{Certs: f.store, Default: be.target(), Evidence: evidenceHandler()}))
	mustf(t, err, "New")
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	idle := dialTLS(t, ln.Addr().String(), f.clientTLS("app.test"))
	busy := dialTLS(t, ln.Addr().String(), f.clientTLS("app.test"))
	io.WriteString(busy, "x")
	busy.Read(make([]byte, 1))
	waitFor(t, 5*time.Second, "two connections", func() bool { return s.Stats().Active == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v", err)
	}
	for _, c := range []*tls.Conn{idle, busy} {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(c); err != nil && !isReset(err) {
			t.Fatalf("after forced close: %v", err)
		}
	}
	if st := s.Stats(); st.Active != 0 {
		t.Fatalf("after Shutdown: %+v", st)
	}
	<-served
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne)
}
