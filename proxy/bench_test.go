package proxy

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// Benchmarks of the hot paths, each through the proxy and "direct" (a Go TLS
// server doing the same job without the proxy hop), so that the difference is
// the proxy's cost:
//
//	go test -run '^$' -bench . -benchmem ./proxy/

// tlsEchoServer is the "direct" baseline: TLS terminated by the server itself.
func tlsEchoServer(b testing.TB, f *fixture, handle func(net.Conn)) string {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{*f.certs["app.test"]}})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); handle(c) }()
		}
	}()
	b.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// pingPong answers every 64-byte message with 64 bytes.
func pingPong(c net.Conn) {
	buf := make([]byte, 64)
	for {
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

func benchRoundTrips(b *testing.B, addr string, cfg *tls.Config) {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 64)
	copy(msg, "ping")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKeepAliveRoundTrip: one 64-byte request and response on an open TLS
// connection.
func BenchmarkKeepAliveRoundTrip(b *testing.B) {
	f := newFixture(b)
	be := startTCPBackend(b, pingPong)
	b.Run("direct", func(b *testing.B) {
		benchRoundTrips(b, tlsEchoServer(b, f, pingPong), f.clientTLS("app.test"))
	})
	b.Run("proxy-tcp", func(b *testing.B) {
		_, addr := startProxy(b, Config{Certs: f.store, Default: be.target()})
		benchRoundTrips(b, addr, f.clientTLS("app.test"))
	})
	b.Run("proxy-tcp-evidence", func(b *testing.B) {
		_, addr := startProxy(b, Config{Certs: f.store, Default: be.target(), Evidence: evidenceHandler()})
		benchRoundTrips(b, addr, f.clientTLS("app.test"))
	})
}

// BenchmarkHTTPKeepAlive: GET / (64-byte body) with net/http's client on a
// keep-alive connection.
func BenchmarkHTTPKeepAlive(b *testing.B) {
	f := newFixture(b)
	body := strings.Repeat("x", 64)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })
	be := startH2CBackend(b, h)
	target := Target{Scheme: SchemeHTTP, Addr: strings.TrimPrefix(be.URL, "http://")}
	run := func(b *testing.B, addr string, h2 bool) {
		hc := f.httpClient(addr, h2)
		defer hc.CloseIdleConnections()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			resp, err := hc.Get("https://app.test/")
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	direct := func(b *testing.B) string {
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
			TLSConfig: &tls.Config{Certificates: []tls.Certificate{*f.certs["app.test"]}}}
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		go srv.ServeTLS(ln, "", "")
		b.Cleanup(func() { srv.Close() })
		return ln.Addr().String()
	}
	b.Run("direct-h1", func(b *testing.B) { run(b, direct(b), false) })
	b.Run("proxy-tcp-h1", func(b *testing.B) {
		_, addr := startProxy(b, Config{Certs: f.store, Default: target, Evidence: evidenceHandler()})
		run(b, addr, false)
	})
	b.Run("proxy-http-h1", func(b *testing.B) {
		_, addr := startProxy(b, Config{Certs: f.store, Mode: ModeHTTP, Default: target, Evidence: evidenceHandler()})
		run(b, addr, false)
	})
	b.Run("proxy-http-h2", func(b *testing.B) {
		_, addr := startProxy(b, Config{Certs: f.store, Mode: ModeHTTP, Default: target, Evidence: evidenceHandler()})
		run(b, addr, true)
	})
	b.Run("proxy-http-h2-nethttp", func(b *testing.B) {
		_, addr := startProxy(b, Config{Certs: f.store, Mode: ModeHTTP, Default: target, Evidence: evidenceHandler(), PlainHTTP2: true})
		run(b, addr, true)
	})
}

// BenchmarkH2Concurrent: many streams at once on one HTTP/2 connection (as
// h2load -m10 and browsers do), on the HTTP/2 fast path and on net/http.
func BenchmarkH2Concurrent(b *testing.B) {
	f := newFixture(b)
	body := strings.Repeat("x", 64)
	be := startH2CBackend(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) }))
	target := Target{Scheme: SchemeHTTP, Addr: strings.TrimPrefix(be.URL, "http://")}
	for _, plain := range []bool{false, true} {
		b.Run(map[bool]string{false: "fast", true: "nethttp"}[plain], func(b *testing.B) {
			_, addr := startProxy(b, Config{Certs: f.store, Mode: ModeHTTP, Default: target, PlainHTTP2: plain})
			hc := f.httpClient(addr, true)
			defer hc.CloseIdleConnections()
			b.ReportAllocs()
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := hc.Get("https://app.test/")
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		})
	}
}

// BenchmarkNewConnection: a full TLS handshake (no resumption), one 64-byte
// round trip, close.
func BenchmarkNewConnection(b *testing.B) {
	f := newFixture(b)
	be := startTCPBackend(b, pingPong)
	run := func(b *testing.B, addr string) {
		cfg := f.clientTLS("app.test")
		cfg.ClientSessionCache = nil
		cfg.CurvePreferences = []tls.CurveID{tls.X25519} // what the bench's clients offer
		msg := make([]byte, 64)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			c, err := tls.Dial("tcp", addr, cfg)
			if err != nil {
				b.Fatal(err)
			}
			c.Write(msg)
			if _, err := io.ReadFull(c, msg); err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	}
	b.Run("direct", func(b *testing.B) { run(b, tlsEchoServer(b, f, pingPong)) })
	b.Run("proxy-tcp", func(b *testing.B) {
		_, addr := startProxy(b, Config{Certs: f.store, Default: be.target(), Evidence: evidenceHandler()})
		run(b, addr)
	})
}

// echoAll echoes whatever arrives, as it arrives.
func echoAll(c net.Conn) { io.Copy(c, c) }

// firstByteLatency is the time from the client's first write (6 bytes, shorter
// than the evidence prefixes) to the first byte of the backend's answer, on a
// fresh, already handshaken connection.
func firstByteLatency(tb testing.TB, addr string, cfg *tls.Config) time.Duration {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	one := make([]byte, 1)
	start := time.Now()
	c.Write([]byte("hello\n"))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(one); err != nil {
		tb.Fatal(err)
	}
	return time.Since(start)
}

// BenchmarkFirstWrite: the evidence sniffing must add no latency to a short
// first write; compare proxy-sniffing with proxy-no-evidence and direct.
func BenchmarkFirstWrite(b *testing.B) {
	f := newFixture(b)
	be := startTCPBackend(b, echoAll)
	run := func(b *testing.B, addr string) {
		var total time.Duration
		for i := 0; i < b.N; i++ {
			total += firstByteLatency(b, addr, f.clientTLS("app.test"))
		}
		b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs-to-first-byte")
	}
	b.Run("direct", func(b *testing.B) { run(b, tlsEchoServer(b, f, echoAll)) })
	b.Run("proxy-no-evidence", func(b *testing.B) {
		_, addr := startProxy(b, Config{Certs: f.store, Default: be.target()})
		run(b, addr)
	})
	b.Run("proxy-sniffing", func(b *testing.B) {
		_, addr := startProxy(b, Config{Certs: f.store, Default: be.target(), Evidence: evidenceHandler()})
		run(b, addr)
	})
}

// A bounded comparison rather than a fixed threshold: the median time to the
// first backend byte with evidence sniffing is within a generous factor of the
// same proxy without it. A sniffer that waited for more bytes (or for a timer)
// would be far outside.
func TestShortFirstWriteNotDelayed(t *testing.T) {
	f := newFixture(t)
	be := startTCPBackend(t, echoAll)
	_, plain := startProxy(t, Config{Certs: f.store, Default: be.target()})
	_, sniffing := startProxy(t, Config{Certs: f.store, Default: be.target(), Evidence: evidenceHandler()})
	median := func(addr string) time.Duration {
		var d []time.Duration
		for i := 0; i < 41; i++ {
			d = append(d, firstByteLatency(t, addr, f.clientTLS("app.test")))
		}
		slices.Sort(d)
		return d[len(d)/2]
	}
	a, b := median(plain), median(sniffing)
	t.Logf("median time to first backend byte: %v without sniffing, %v with", a, b)
	if b > 3*a+5*time.Millisecond {
		t.Fatalf("sniffing delays short first writes: median %v vs %v", b, a)
	}
}
