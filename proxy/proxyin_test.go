package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"golang.org/x/net/http2"
)

// gatewayClient is what the dstack gateway does on a "pp" port: a PROXY
// header with the client's address, then the client's TLS bytes.
func gatewayClient(t *testing.T, f *fixture, addr string, header []byte, alpn string) (*tls.Conn, error) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	if len(header) > 0 {
		if _, err := raw.Write(header); err != nil {
			return nil, err
		}
	}
	cfg := f.clientTLS("app.test")
	if alpn != "" {
		cfg = f.clientTLS("app.test", alpn)
	}
	c := tls.Client(raw, cfg)
	return c, c.Handshake()
}

func v2Header(t *testing.T, src string) []byte {
	t.Helper()
	h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)),
		net.TCPAddrFromAddrPort(netip.MustParseAddrPort("10.0.0.1:443")))
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestProxyProtocolInHTTP: behind a front that sends a PROXY v2 (or v1)
// header, the backend sees the client the header names, on the fast path
// and through net/http (HTTP/2).
func TestProxyProtocolInHTTP(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	app := startHTTPBackend(t, "app")
	s, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: app.target(), ProxyProtocolIn: true})
	for _, tc := range []struct {
		name, alpn, want string
		header           []byte
	}{
		{"v2 fast path", "http/1.1", "203.0.113.7", v2Header(t, "203.0.113.7:40000")},
		{"v2 h2", "h2", "2001:db8::7", v2Header(t, "[2001:db8::7]:40000")},
		{"v1", "http/1.1", "198.51.100.9", []byte("PROXY TCP4 198.51.100.9 10.0.0.1 5555 443\r\n")},
		{"v2 local command", "http/1.1", "127.0.0.1", []byte("\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := gatewayClient(t, f, addr, tc.header, tc.alpn)
			if err != nil {
				t.Fatalf("handshake after the header: %v", err)
			}
			var seen seenRequest
			if tc.alpn == "h2" {
				seen = getH2(t, c)
			} else {
				io.WriteString(c, "GET /who HTTP/1.1\r\nHost: app.test\r\n\r\n")
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatal(err)
				}
				json.NewDecoder(resp.Body).Decode(&seen)
			}
			if got := seen.Header.Get("X-Forwarded-For"); got != tc.want || seen.Header.Get("X-Real-Ip") != tc.want {
				t.Errorf("backend saw X-Forwarded-For %q, X-Real-Ip %q; want %s", got, seen.Header.Get("X-Real-Ip"), tc.want)
			}
		})
	}
	if n := s.Stats().ProxyHeaderRefused; n != 0 {
		t.Errorf("%d refused", n)
	}
}

// getH2 sends one HTTP/2 request on an established connection.
func getH2(t *testing.T, c *tls.Conn) seenRequest {
	t.Helper()
	cc, err := (&http2.Transport{}).NewClientConn(c)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "https://app.test/who", nil)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var seen seenRequest
	json.NewDecoder(resp.Body).Decode(&seen)
	return seen
}

// TestProxyProtocolInEvidence: the evidence handler (and with it the live
// quote's per-client budget) sees the header's client, in both modes.
func TestProxyProtocolInEvidence(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	app := startHTTPBackend(t, "app")
	seen := make(chan string, 4)
	ev := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.RemoteAddr
		io.WriteString(w, "evidence")
	})
	for _, mode := range []Mode{ModeTCP, ModeHTTP} {
		target := app.target()
		if mode == ModeTCP {
			target.Scheme = ""
		}
		_, addr := startProxy(t, Config{Certs: f.store, Mode: mode, Default: target, Evidence: ev, ProxyProtocolIn: true})
		c, err := gatewayClient(t, f, addr, v2Header(t, "203.0.113.9:41000"), "http/1.1")
		if err != nil {
			t.Fatalf("%s: handshake: %v", mode, err)
		}
		io.WriteString(c, "GET /evidences/ HTTP/1.1\r\nHost: app.test\r\n\r\n")
		if _, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		if got := <-seen; got != "203.0.113.9:41000" {
			t.Errorf("%s: the evidence handler saw %s, want the gateway's client 203.0.113.9:41000", mode, got)
		}
	}
}

// TestProxyProtocolInTCP: in tcp mode the header's client goes on in the
// PROXY header the backend gets.
func TestProxyProtocolInTCP(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	be, headers := proxyHeaderBackend(t)
	_, addr := startProxy(t, Config{Certs: f.store, Default: be.target(), ProxyProtocol: true, ProxyProtocolIn: true})
	c, err := gatewayClient(t, f, addr, v2Header(t, "203.0.113.7:40000"), "")
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	io.WriteString(c, "ping")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	h := <-headers
	if src, _, ok := h.TCPAddrs(); !ok || src.String() != "203.0.113.7:40000" {
		t.Fatalf("backend's PROXY header names %v, want the gateway's client 203.0.113.7:40000", h.SourceAddr)
	}
}

// TestProxyProtocolInRefused: when the header is required, a connection
// without one, with a malformed or oversized one, from a peer not allowed,
// or whose header does not come in time, is closed and counted; and where it
// is not required, a header is TLS garbage, as before.
func TestProxyProtocolInRefused(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	app := startHTTPBackend(t, "app")
	required := Config{Certs: f.store, Mode: ModeHTTP, Default: app.target(), ProxyProtocolIn: true, HandshakeTimeout: 300 * time.Millisecond}
	s, addr := startProxy(t, required)
	onlyGateway := required
	onlyGateway.ProxyProtocolFrom = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	sg, gwAddr := startProxy(t, onlyGateway)
	plain, plainAddr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: app.target()})

	long := v2Header(t, "203.0.113.7:1")
	long[14], long[15] = 0xff, 0xff
	for _, tc := range []struct {
		name   string
		srv    *Server
		addr   string
		header []byte
	}{
		{"no header", s, addr, nil},
		{"garbage", s, addr, []byte("GET / HTTP/1.1\r\n\r\n")},
		{"broken v1", s, addr, []byte("PROXY TCP4 nonsense\r\n")},
		{"v1 without end", s, addr, []byte("PROXY " + strings.Repeat("1", 120))},
		{"v2 too long", s, addr, long},
		{"peer not allowed", sg, gwAddr, v2Header(t, "203.0.113.7:1")},
		{"header where none is expected", plain, plainAddr, v2Header(t, "203.0.113.7:1")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.srv.Stats()
			if _, err := gatewayClient(t, f, tc.addr, tc.header, "http/1.1"); err == nil {
				t.Fatal("the handshake succeeded")
			}
			if tc.srv == plain {
				waitFor(t, 5*time.Second, "a handshake error", func() bool { return plain.Stats().HandshakeErrors > before.HandshakeErrors })
				return
			}
			waitFor(t, 5*time.Second, "the refusal to be counted", func() bool {
				return tc.srv.Stats().ProxyHeaderRefused == before.ProxyHeaderRefused+1
			})
			if tc.srv.Stats().HandshakeErrors != before.HandshakeErrors {
				t.Error("a TLS handshake was attempted")
			}
		})
	}
}

// TestProxyProtocolInLate: a peer that sends part of a header and stops is
// closed when the handshake timeout passes.
func TestProxyProtocolInLate(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	app := startHTTPBackend(t, "app")
	s, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: app.target(), ProxyProtocolIn: true, HandshakeTimeout: 300 * time.Millisecond})
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.Write(v2Header(t, "203.0.113.7:1")[:10])
	raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	if n, err := raw.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read %d, %v; want the connection closed", n, err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("closed after %v, want about the 300 ms handshake timeout", took)
	}
	waitFor(t, 5*time.Second, "the refusal to be counted", func() bool { return s.Stats().ProxyHeaderRefused == 1 })
}

// FuzzProxyHeaderIn: any bytes are read as at most one header, never past
// it, and a header taken names a usable client address or none.
func FuzzProxyHeaderIn(f *testing.F) {
	f.Add([]byte("PROXY TCP4 198.51.100.9 10.0.0.1 5555 443\r\nTLS"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add([]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xcb\x00\x71\x07\x0a\x00\x00\x01\x9c\x40\x01\xbb\x16\x03"))
	f.Add([]byte("\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &countingReader{b: b}
		raw, err := readHeaderBytes(r)
		if err != nil {
			return
		}
		if !bytes.HasPrefix(b, raw) || r.n != len(raw) {
			t.Fatalf("read %d bytes for a %d-byte header of %q", r.n, len(raw), b)
		}
		src, err := parseProxyHeader(raw)
		if err == nil && src != nil {
			if tcp, ok := src.(*net.TCPAddr); !ok || tcp.IP == nil {
				t.Fatalf("%q: client %v", b, src)
			}
		}
	})
}

type countingReader struct {
	b []byte
	n int
}

func (r *countingReader) Read(p []byte) (int, error) {
	if r.n == len(r.b) {
		return 0, io.EOF
	}
	m := copy(p, r.b[r.n:])
	r.n += m
	return m, nil
}
