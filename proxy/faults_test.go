package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// waitFor polls cond every few milliseconds until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-tick.C
	}
}

func refusedAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	mustf(t, err, "listen")
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// resetHandler reads the first bytes, then resets the connection.
func resetHandler(c net.Conn) {
	c.Read(make([]byte, 1))
	c.(*net.TCPConn).SetLinger(0)
	c.Close()
}

// hangHandler accepts and then neither reads nor writes until closed.
func hangHandler(c net.Conn) {
	c.Read(make([]byte, 0))
	io.Copy(io.Discard, c) // returns when the proxy (or cleanup) closes
}

func TestTCPBackendFaults(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	const timeout = 300 * time.Millisecond
	for _, tc := range []struct {
		name    string
		target  func() Target
		minTime time.Duration
	}{
		{"refused", func() Target { return Target{Addr: refusedAddr(t)} }, 0},
		{"reset", func() Target { return startTCPBackend(t, resetHandler).target() }, 0},
		{"hang", func() Target { return startTCPBackend(t, hangHandler).target() }, timeout},
	} {
		for _, withEvidence := range []bool{false, true} {
			cfg := Config{Certs: f.store, Default: tc.target(), ServerTimeout: timeout, ClientTimeout: timeout, HeaderTimeout: timeout}
			if withEvidence {
				cfg.Evidence = evidenceHandler()
			}
			s, addr := startProxy(t, cfg)
			c := dialTLS(t, addr, f.clientTLS("app.test"))
			start := time.Now()
			io.WriteString(c, "hello")
			got, err := readAllWithin(t, c, 10*time.Second)
			elapsed := time.Since(start)
			// A clean close: EOF after close_notify, no reset, nothing read.
			if err != nil || len(got) != 0 {
				t.Errorf("%s (evidence %v): read %q, %v; want a clean close", tc.name, withEvidence, got, err)
			}
			if elapsed < tc.minTime || elapsed > tc.minTime+5*time.Second {
				t.Errorf("%s (evidence %v): closed after %v, want about %v", tc.name, withEvidence, elapsed, tc.minTime)
			}
			if tc.name != "hang" && s.Stats().BackendErrors == 0 {
				t.Errorf("%s: no backend error counted: %+v", tc.name, s.Stats())
			}
		}
	}
}

func TestHTTPBackendFaults(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	const timeout = 300 * time.Millisecond
	for _, tc := range []struct {
		name    string
		target  Target
		minTime time.Duration
	}{
		{"refused", Target{Addr: refusedAddr(t)}, 0},
		{"reset", startTCPBackend(t, resetHandler).target(), 0},
		{"hang", startTCPBackend(t, hangHandler).target(), timeout},
	} {
		s, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: tc.target, ServerTimeout: timeout})
		for _, h2 := range []bool{false, true} {
			hc := f.httpClient(addr, h2)
			start := time.Now()
			resp, err := hc.Get("https://app.test/")
			elapsed := time.Since(start)
			mustf(t, err, "%s: GET", tc.name)
			resp.Body.Close()
			hc.CloseIdleConnections()
			if resp.StatusCode != http.StatusBadGateway {
				t.Errorf("%s h2=%v: status %d, want 502", tc.name, h2, resp.StatusCode)
			}
			if elapsed < tc.minTime || elapsed > tc.minTime+5*time.Second {
				t.Errorf("%s h2=%v: answered after %v, want about %v", tc.name, h2, elapsed, tc.minTime)
			}
		}
		if s.Stats().BackendErrors != 2 {
			t.Errorf("%s: stats %+v, want 2 backend errors", tc.name, s.Stats())
		}
	}
}

func TestSlowlorisHandshake(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	be := startTCPBackend(t, echoHandler)
	const timeout = 300 * time.Millisecond
	s, addr := startProxy(t, Config{Certs: f.store, Default: be.target(), HandshakeTimeout: timeout})
	c, err := net.Dial("tcp", addr)
	mustf(t, err, "dial")
	defer c.Close()
	start := time.Now()
	// A ClientHello record header, then one byte every 20 ms.
	c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00})
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	closed := false
	for i := 0; i < 500 && !closed; i++ {
		<-tick.C
		if _, err := c.Write([]byte{0x01}); err != nil {
			closed = true
		}
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
			closed = true
		}
	}
	elapsed := time.Since(start)
	if !closed || elapsed < timeout || elapsed > timeout+5*time.Second {
		t.Fatalf("closed=%v after %v, want closed after about %v", closed, elapsed, timeout)
	}
	waitFor(t, 5*time.Second, "handshake error counted", func() bool { return s.Stats().HandshakeErrors == 1 })
}

func TestSlowlorisHeaders(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	app := startHTTPBackend(t, "app")
	const timeout = 300 * time.Millisecond
	for _, mode := range []Mode{ModeHTTP, ModeTCP} {
		_, addr := startProxy(t, Config{Certs: f.store, Mode: mode, Default: app.target(), Evidence: evidenceHandler(), HeaderTimeout: timeout})
		c := dialTLS(t, addr, f.clientTLS("app.test", "http/1.1"))
		start := time.Now()
		// In tcp mode the evidence request line puts the connection in the
		// proxy's hands, so the proxy's header timeout applies.
		io.WriteString(c, "GET /evidences/quote.json HTTP/1.1\r\n")
		tick := time.NewTicker(20 * time.Millisecond)
		closed := false
		for i := 0; i < 500 && !closed; i++ {
			<-tick.C
			if _, err := io.WriteString(c, "X"); err != nil {
				closed = true
			}
			c.SetReadDeadline(time.Now().Add(time.Millisecond))
			if _, err := c.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
				closed = true
			}
		}
		tick.Stop()
		elapsed := time.Since(start)
		if !closed || elapsed < timeout || elapsed > timeout+5*time.Second {
			t.Fatalf("mode %v: closed=%v after %v, want closed after about %v", mode, closed, elapsed, timeout)
		}
	}
}

func TestMaxConns(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	be := startTCPBackend(t, func(c net.Conn) { io.Copy(c, c) })
	const max = 3
	s, addr := startProxy(t, Config{Certs: f.store, Default: be.target(), MaxConns: max})
	var open []*tls.Conn
	for i := 0; i < max; i++ {
		c := dialTLS(t, addr, f.clientTLS("app.test"))
		io.WriteString(c, "x")
		c.Read(make([]byte, 1)) // the connection is through to the backend
		open = append(open, c)
	}
	// Connection MaxConns+1 is closed before its handshake.
	_, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, f.clientTLS("app.test"))
	if err == nil {
		t.Fatal("connection beyond MaxConns was served")
	}
	if st := s.Stats(); st.Refused != 1 || st.Active != max {
		t.Fatalf("stats %+v, want 1 refused and %d active", st, max)
	}
	// Existing connections are unaffected.
	for _, c := range open {
		io.WriteString(c, "y")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if b := make([]byte, 1); func() error { _, err := io.ReadFull(c, b); return err }() != nil || b[0] != 'y' {
			t.Fatal("open connection broken by the refused one")
		}
	}
	// Once one closes, a new one is accepted.
	open[0].Close()
	waitFor(t, 5*time.Second, "a free slot", func() bool { return s.Stats().Active < max })
	c := dialTLS(t, addr, f.clientTLS("app.test"))
	io.WriteString(c, "z")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b := make([]byte, 1); func() error { _, err := io.ReadFull(c, b); return err }() != nil || b[0] != 'z' {
		t.Fatal("new connection after a slot freed up does not work")
	}
}

func TestGarbageClientHello(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	be := startTCPBackend(t, echoHandler)
	s, addr := startProxy(t, Config{Certs: f.store, Default: be.target(), Evidence: evidenceHandler()})
	garbage := [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: app.test\r\n\r\n"),                                          // plaintext HTTP on the TLS port
		append([]byte{0x16, 0x03, 0x01, 0x00, 0x20}, make([]byte, 32)...),                           // handshake record of zeros
		append([]byte{0x16, 0x03, 0x03, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04}, "\xff\xff\xff\xff"...), // ClientHello with a bad body
		[]byte(strings.Repeat("\xde\xad\xbe\xef", 100)),
	}
	for i, g := range garbage {
		c, err := net.Dial("tcp", addr)
		mustf(t, err, "dial")
		c.Write(g)
		// The server answers with at most an alert and closes.
		got, err := readAllWithin(t, c, 10*time.Second)
		c.Close()
		if err != nil && !strings.Contains(err.Error(), "reset") {
			t.Errorf("garbage %d: %v", i, err)
		}
		if len(got) > 7 || (len(got) > 0 && got[0] != 0x15) {
			t.Errorf("garbage %d: server sent %x, want at most a TLS alert", i, got)
		}
	}
	waitFor(t, 5*time.Second, "handshake errors counted", func() bool { return s.Stats().HandshakeErrors == uint64(len(garbage)) })
	// The server still works.
	c := dialTLS(t, addr, f.clientTLS("app.test"))
	io.WriteString(c, "ok")
	c.CloseWrite()
	if got, err := readAllWithin(t, c, 10*time.Second); err != nil || string(got) != "okbye" {
		t.Fatalf("after garbage: %q %v", got, err)
	}
}

func TestTLSAlpn01Challenge(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	be := startTCPBackend(t, echoHandler)
	chal := f.pki.issue(t, "app.test") // stands in for lego's tlsalpn01.ChallengeCert
	for _, mode := range []Mode{ModeTCP, ModeHTTP} {
		app := startHTTPBackend(t, "app")
		target := be.target()
		if mode == ModeHTTP {
			target = app.target()
		}
		s, addr := startProxy(t, Config{Certs: f.store, Challenges: f.store, Mode: mode, Default: target})
		acmeTLS := func() (*tls.Conn, error) {
			cfg := f.clientTLS("app.test", ALPNChallenge)
			cfg.InsecureSkipVerify = true // the CA checks the acmeIdentifier extension instead
			return tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
		}
		// No challenge pending: the handshake fails.
		if c, err := acmeTLS(); err == nil {
			c.Close()
			t.Fatalf("mode %v: acme-tls/1 handshake succeeded without a pending challenge", mode)
		}
		f.store.SetChallengeCert("APP.test.", chal)
		c, err := acmeTLS()
		mustf(t, err, "acme-tls/1 handshake")
		st := c.ConnectionState()
		if st.NegotiatedProtocol != ALPNChallenge || st.PeerCertificates[0].SerialNumber.Cmp(chal.Leaf.SerialNumber) != 0 {
			t.Fatalf("mode %v: negotiated %q with serial %v, want the challenge certificate", mode, st.NegotiatedProtocol, st.PeerCertificates[0].SerialNumber)
		}
		// ... and the connection is closed after the handshake.
		if got, err := readAllWithin(t, c, 10*time.Second); err != nil || len(got) != 0 {
			t.Fatalf("after challenge handshake: %q %v", got, err)
		}
		c.Close()
		// Ordinary clients still get the ordinary certificate meanwhile.
		n := dialTLS(t, addr, f.clientTLS("app.test", "http/1.1"))
		if n.ConnectionState().PeerCertificates[0].SerialNumber.Cmp(f.certs["app.test"].Leaf.SerialNumber) != 0 {
			t.Fatal("ordinary client got the challenge certificate")
		}
		n.Close()
		f.store.ClearChallengeCert("app.test")
		if c, err := acmeTLS(); err == nil {
			c.Close()
			t.Fatal("challenge still answered after ClearChallengeCert")
		}
		if s.Stats().Challenges != 1 {
			t.Fatalf("stats %+v", s.Stats())
		}
	}
}

func TestUnroutedCounted(t *testing.T) {
	f := newFixture(t)
	be := startTCPBackend(t, echoHandler)
	s, addr := startProxy(t, Config{Certs: f.store, Routes: []Route{{Host: "other.test", Target: be.target()}}})
	c := dialTLS(t, addr, f.clientTLS("app.test"))
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("unrouted connection: %v, want EOF", err)
	}
	waitFor(t, 5*time.Second, "unrouted counted", func() bool { return s.Stats().Unrouted == 1 })
}
