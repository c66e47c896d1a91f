package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestHTTPModeH1AndH2(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	app := startHTTPBackend(t, "app")
	wild := startHTTPBackend(t, "wild")
	s, addr := startProxy(t, Config{
		Certs:    f.store,
		Mode:     ModeHTTP,
		Default:  app.target(),
		Routes:   []Route{{Host: "*.wild.test", Target: wild.target()}},
		Evidence: evidenceHandler(),
	})
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			hc := f.httpClient(addr, h2)
			defer hc.CloseIdleConnections()
			wantProto := map[bool]int{false: 1, true: 2}[h2]

			spoof := http.Header{"X-Forwarded-For": {"6.6.6.6"}, "X-Forwarded-Host": {"evil.test"}, "X-Forwarded-Proto": {"http"}}
			resp, seen := getJSON(t, hc, "https://app.test/some/path?q=1", spoof)
			if resp.StatusCode != 200 || resp.ProtoMajor != wantProto {
				t.Fatalf("status %d proto %s", resp.StatusCode, resp.Proto)
			}
			if seen.Backend != "app" || seen.Path != "/some/path" || seen.Host != "app.test" || seen.Proto != "HTTP/1.1" {
				t.Fatalf("backend saw %+v", seen)
			}
			if got := seen.Header.Get("X-Forwarded-For"); got != "127.0.0.1" {
				t.Errorf("X-Forwarded-For %q, want 127.0.0.1 (client-sent value dropped)", got)
			}
			if got := seen.Header.Get("X-Forwarded-Host"); got != "app.test" {
				t.Errorf("X-Forwarded-Host %q", got)
			}
			if got := seen.Header.Get("X-Forwarded-Proto"); got != "https" {
				t.Errorf("X-Forwarded-Proto %q", got)
			}

			// Routing by Host, one-label wildcard.
			if _, seen := getJSON(t, hc, "https://x.wild.test/", nil); seen.Backend != "wild" {
				t.Errorf("x.wild.test went to %q", seen.Backend)
			}
			if _, seen := getJSON(t, hc, "https://x.wild.test/", http.Header{"Host": {"a.b.wild.test"}}); seen.Backend != "app" {
				t.Errorf("a.b.wild.test went to %q, want the default", seen.Backend)
			}

			// Evidence.
			for _, p := range []string{"/evidences/quote.json", "/evidences/", "/evidences"} {
				resp, err := hc.Get("https://app.test" + p)
				mustf(t, err, "GET %s", p)
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || resp.ProtoMajor != wantProto || (p == "/evidences/quote.json") != (string(body) == `{"quote":"00"}`) {
					t.Fatalf("GET %s: %d %s %q", p, resp.StatusCode, resp.Proto, body)
				}
			}
			if _, seen := getJSON(t, hc, "https://app.test/evidencesX", nil); seen.Path != "/evidencesX" {
				t.Errorf("/evidencesX should reach the backend, got %+v", seen)
			}
		})
	}
	if st := s.Stats(); st.EvidenceRequests != 6 {
		t.Errorf("stats %+v, want 6 evidence requests", st)
	}
}

func TestHTTPModePoolsBackendConnections(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	app := startHTTPBackend(t, "app")
	_, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: app.target()})
	hc := f.httpClient(addr, true)
	defer hc.CloseIdleConnections()
	for i := 0; i < 50; i++ {
		if resp, _ := getJSON(t, hc, "https://app.test/", nil); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	if n := app.conns.Load(); n != 1 {
		t.Fatalf("backend saw %d connections for 50 sequential requests, want 1", n)
	}
}

func TestHTTPModeUnroutedAndLimits(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	app := startHTTPBackend(t, "app")
	_, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Routes: []Route{{Host: "app.test", Target: app.target()}}, MaxHeaderBytes: 4096})
	hc := f.httpClient(addr, false)
	defer hc.CloseIdleConnections()
	if resp, _ := getJSON(t, hc, "https://app.test/", http.Header{"Host": {"unknown.test"}}); resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("unrouted host: %d, want 421", resp.StatusCode)
	}
	if resp, _ := getJSON(t, hc, "https://app.test/", http.Header{"X-Big": {strings.Repeat("a", 20000)}}); resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("oversized headers: %d, want 431", resp.StatusCode)
	}
}

func TestHTTPModeServerSentEvents(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	next := make(chan struct{})
	be := startH2CBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 1; i <= 3; i++ {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-next: // the client has seen this event
			case <-r.Context().Done():
				return
			}
		}
	}))
	_, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: Target{Scheme: SchemeHTTP, Addr: strings.TrimPrefix(be.URL, "http://")}})
	for _, h2 := range []bool{false, true} {
		hc := f.httpClient(addr, h2)
		resp, err := hc.Get("https://app.test/events")
		mustf(t, err, "GET events")
		br := bufio.NewReader(resp.Body)
		// Each event must arrive before the backend sends the next one: a
		// proxy that buffered would deadlock here until the client timeout.
		for i := 1; i <= 3; i++ {
			line, err := br.ReadString('\n')
			if err != nil || line != fmt.Sprintf("data: %d\n", i) {
				t.Fatalf("h2=%v event %d: %q, %v", h2, i, line, err)
			}
			br.ReadString('\n')
			next <- struct{}{}
		}
		resp.Body.Close()
		hc.CloseIdleConnections()
	}
}

func TestHTTPModeWebsocket(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	be := startH2CBackend(t, websocket.Handler(func(ws *websocket.Conn) { io.Copy(ws, ws) }))
	_, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: Target{Scheme: SchemeHTTP, Addr: strings.TrimPrefix(be.URL, "http://")}})
	raw := dialTLS(t, addr, f.clientTLS("app.test", "http/1.1"))
	loc, _ := url.Parse("wss://app.test/ws")
	origin, _ := url.Parse("https://app.test/")
	ws, err := websocket.NewClient(&websocket.Config{Location: loc, Origin: origin, Version: websocket.ProtocolVersionHybi13}, raw)
	mustf(t, err, "websocket handshake through the proxy")
	defer ws.Close()
	ws.SetDeadline(time.Now().Add(10 * time.Second))
	for _, msg := range []string{"hello", strings.Repeat("x", 3000)} {
		mustf(t, websocket.Message.Send(ws, msg), "send")
		var got string
		mustf(t, websocket.Message.Receive(ws, &got), "receive")
		if got != msg {
			t.Fatalf("echo: got %d bytes, want %d", len(got), len(msg))
		}
	}
}

func TestHTTPModeGRPC(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	mustf(t, err, "listen")
	gs := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	hs.SetServingStatus("app", healthpb.HealthCheckResponse_SERVING)
	served := make(chan struct{})
	go func() { defer close(served); gs.Serve(ln) }()
	t.Cleanup(func() { gs.Stop(); <-served })

	for _, scheme := range []string{SchemeH2C, SchemeGRPC} {
		t.Run(scheme, func(t *testing.T) {
			hs.SetServingStatus("app", healthpb.HealthCheckResponse_SERVING)
			_, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: Target{Scheme: scheme, Addr: ln.Addr().String()}, Evidence: evidenceHandler()})
			cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(f.clientTLS("app.test"))))
			mustf(t, err, "grpc client")
			defer cc.Close()
			hc := healthpb.NewHealthClient(cc)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()

			// Unary.
			resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "app"})
			mustf(t, err, "Check")
			if resp.Status != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("Check: %v", resp.Status)
			}
			// gRPC status codes travel in trailers: an unknown service is NotFound.
			if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"}); err == nil || !strings.Contains(err.Error(), "NotFound") {
				t.Fatalf("Check unknown service: %v, want NotFound", err)
			}

			// Server streaming: each status change arrives while the stream is open.
			stream, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "app"})
			mustf(t, err, "Watch")
			for _, next := range []healthpb.HealthCheckResponse_ServingStatus{healthpb.HealthCheckResponse_NOT_SERVING, healthpb.HealthCheckResponse_SERVING} {
				msg, err := stream.Recv()
				mustf(t, err, "Watch Recv")
				if msg.Status == next {
					t.Fatalf("status already %v", next)
				}
				hs.SetServingStatus("app", next)
				msg, err = stream.Recv()
				mustf(t, err, "Watch Recv after change")
				if msg.Status != next {
					t.Fatalf("Watch: %v, want %v", msg.Status, next)
				}
				if next == healthpb.HealthCheckResponse_SERVING {
					break
				}
				// Re-prime: the next loop's first Recv must see NOT_SERVING.
				hs.SetServingStatus("app", healthpb.HealthCheckResponse_NOT_SERVING)
				stream, err = hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "app"})
				mustf(t, err, "Watch again")
			}
			cancel()
		})
	}
}

// The http mode offers h2 and http/1.1; tcp mode offers nothing unless told.
func TestALPNOffered(t *testing.T) {
	f := newFixture(t)
	app := startHTTPBackend(t, "app")
	for _, tc := range []struct {
		mode  Mode
		alpn  []string
		offer []string
		want  string
	}{
		{ModeTCP, nil, []string{"h2", "http/1.1"}, ""},
		{ModeTCP, []string{"h2", "http/1.1"}, []string{"h2", "http/1.1"}, "h2"},
		{ModeHTTP, nil, []string{"h2", "http/1.1"}, "h2"},
		{ModeHTTP, nil, []string{"http/1.1"}, "http/1.1"},
		{ModeHTTP, []string{"http/1.1"}, []string{"h2", "http/1.1"}, "http/1.1"},
	} {
		_, addr := startProxy(t, Config{Certs: f.store, Mode: tc.mode, Default: app.target(), ALPN: tc.alpn})
		c := dialTLS(t, addr, f.clientTLS("app.test", tc.offer...))
		if got := c.ConnectionState().NegotiatedProtocol; got != tc.want {
			t.Errorf("mode %v ALPN %v, client offers %v: negotiated %q, want %q", tc.mode, tc.alpn, tc.offer, got, tc.want)
		}
		if c.ConnectionState().Version != tls.VersionTLS13 {
			t.Errorf("TLS version %x", c.ConnectionState().Version)
		}
		c.Close()
	}
}

func TestHTTPModeHTTPSBackend(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls backend %s %s %s", r.Proto, r.Host, r.URL.Path)
	}))
	be.EnableHTTP2 = true
	be.StartTLS()
	t.Cleanup(be.Close)
	roots := x509.NewCertPool()
	roots.AddCert(be.Certificate())
	_, addr := startProxy(t, Config{
		Certs:      f.store,
		Mode:       ModeHTTP,
		Default:    Target{Scheme: SchemeHTTPS, Addr: strings.TrimPrefix(be.URL, "https://")},
		BackendTLS: &tls.Config{RootCAs: roots, ServerName: "example.com"},
	})
	hc := f.httpClient(addr, true)
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("https://app.test/x")
	mustf(t, err, "GET")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// HTTP/2 to the backend as well (ALPN over the backend TLS).
	if string(body) != "tls backend HTTP/2.0 app.test /x" {
		t.Fatalf("got %q", body)
	}
}
