package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestUpgradeEarlyData: bytes a client sends in the same write as its
// Upgrade request, before the 101, reach the backend after the switch.
func TestUpgradeEarlyData(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	be := startTCPBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil || req.Header.Get("Upgrade") != "echo" {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		io.Copy(c, br) // echoes what follows the head
	})
	_, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: Target{Scheme: SchemeHTTP, Addr: be.addr}})
	c := dialH1(t, f, addr)
	defer c.c.Close()
	c.send("GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nEARLY")
	resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("switch: %v %v", resp, err)
	}
	c.send("LATE")
	got := make([]byte, len("EARLYLATE"))
	if _, err := io.ReadFull(c.br, got); err != nil || string(got) != "EARLYLATE" {
		t.Fatalf("echoed %q (%v), want EARLYLATE: the early bytes were lost", got, err)
	}
}

// TestShutdownClosesSilentConnections: an h2 client that opened a
// connection and sent nothing does not hold the drain: net/http would wait
// five seconds before counting it idle; Shutdown finishes well inside four.
func TestShutdownClosesSilentConnections(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	app := startHTTPBackend(t, "app")
	s, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: app.target(), ALPN: []string{"h2", "http/1.1"}})
	for _, proto := range []string{"h2", "http/1.1"} {
		c := dialTLS(t, addr, f.clientTLS("app.test", proto))
		if got := c.ConnectionState().NegotiatedProtocol; got != proto {
			t.Fatalf("ALPN %q, want %q", got, proto)
		}
	}
	waitFor(t, 5*time.Second, "both connections to be open", func() bool { return s.Stats().Active == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with two silent connections: %v", err)
	}
}
