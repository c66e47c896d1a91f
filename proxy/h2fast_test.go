package proxy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/tee-ingress/tee-ingress/internal/syncbuf"
)

// The HTTP/2 fast path's own behaviour, through the proxy's listener with
// real backends: flow control both ways, a backend failing mid-response,
// GOAWAY on shutdown and when idle, many streams at once, the access log.

// TestH2FastFlowControl: a client that grants 1000 bytes per stream gets no
// DATA past what it granted, on the stream or the connection, and the whole
// 1 MiB body as it grants more.
func TestH2FastFlowControl(t *testing.T) {
	skipH2OnPlainCore(t)
	checkGoroutines(t)
	f := newFixture(t)
	be, _ := countingBackend(t)
	_, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: be})
	h := dialH2Raw(t, f, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1000})
	defer h.c.Close()
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.block("/big"), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	connWin, streamWin, got := 65535, 1000, 0
	h.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		fr, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %d body bytes: %v", got, err)
		}
		d, ok := fr.(*http2.DataFrame)
		if !ok {
			if s, ok := fr.(*http2.SettingsFrame); ok && !s.IsAck() {
				h.fr.WriteSettingsAck()
			}
			continue
		}
		n := len(d.Data())
		if n > min(connWin, streamWin) || n > 16<<10 {
			t.Fatalf("a DATA frame of %d bytes with %d granted on the stream, %d on the connection", n, streamWin, connWin)
		}
		connWin, streamWin, got = connWin-n, streamWin-n, got+n
		if d.StreamEnded() {
			break
		}
		if streamWin == 0 { // grant in odd sizes, the connection less often
			h.fr.WriteWindowUpdate(1, 7000)
			streamWin += 7000
		}
		if connWin < 20000 {
			h.fr.WriteWindowUpdate(0, 100000)
			connWin += 100000
		}
	}
	if got != 1<<20 {
		t.Fatalf("got %d body bytes, want 1 MiB", got)
	}
}

// hashingBackend answers the SHA-256 and length of each request body, and
// the framing it came with.
func hashingBackend(t *testing.T) Target {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "%d %x length=%d te=%v", n, h.Sum(nil), r.ContentLength, r.TransferEncoding)
	}))
	t.Cleanup(be.Close)
	return Target{Scheme: SchemeHTTP, Addr: strings.TrimPrefix(be.URL, "http://")}
}

// TestH2FastUpload: bodies larger than every receive window reach the
// backend whole, with their length or chunked without one; the client is
// given window as the backend reads.
func TestH2FastUpload(t *testing.T) {
	skipH2OnPlainCore(t)
	checkGoroutines(t)
	f := newFixture(t)
	s, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: hashingBackend(t)})
	hc := f.httpClient(addr, true)
	defer hc.CloseIdleConnections()
	body := strings.Repeat("0123456789abcdef", 3<<16) // 3 MiB
	sum := sha256.Sum256([]byte(body))
	for _, known := range []bool{true, false} {
		var r io.Reader = strings.NewReader(body)
		if !known {
			r = io.MultiReader(r) // no length the client can see
		}
		req, _ := http.NewRequest("POST", "https://app.test/up", r)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("known=%v: %v", known, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := fmt.Sprintf("%d %s", len(body), hex.EncodeToString(sum[:]))
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 || !strings.HasPrefix(string(b), want) {
			t.Fatalf("known=%v: %d %s %q, want %q", known, resp.StatusCode, resp.Proto, b, want)
		}
		wantFraming := map[bool]string{true: "length=3145728 te=[]", false: "length=-1 te=[chunked]"}[known]
		if !strings.HasSuffix(string(b), wantFraming) {
			t.Errorf("known=%v: backend saw %q, want %s", known, b, wantFraming)
		}
	}
	if s.stats.h2Streams.Load() != 2 {
		t.Errorf("the fast path served %d streams, want 2", s.stats.h2Streams.Load())
	}
}

// breakingBackend answers /break with half a body and then closes; other
// paths get a whole one.
func breakingBackend(t *testing.T) *tcpBackend {
	return startTCPBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.URL.Path == "/break" {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
}

// TestH2FastBackendBreaks: a backend that closes mid-body gets the stream
// reset (INTERNAL_ERROR) after what was sent; the connection serves on.
func TestH2FastBackendBreaks(t *testing.T) {
	skipH2OnPlainCore(t)
	checkGoroutines(t)
	f := newFixture(t)
	s, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: breakingBackend(t).target()})
	h := dialH2Raw(t, f, addr)
	defer h.c.Close()
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.block("/break"), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	if r := h.reply(t); r.status != "200 " || r.body != "partial" || r.reset != http2.ErrCodeInternal {
		t.Fatalf("got %v; want 200, partial, then RST_STREAM INTERNAL_ERROR", r)
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: h.block("/next"), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	if r := h.replyOn(t, 3); r.status != "200 " || r.body != "ok" {
		t.Fatalf("the next stream: %v", r)
	}
	if s.Stats().BackendErrors != 1 {
		t.Errorf("%d backend errors counted, want 1", s.Stats().BackendErrors)
	}
}

// TestH2FastGoAway: an idle connection gets GOAWAY (NO_ERROR) and is closed
// when the client timeout passes, and when Shutdown starts.
func TestH2FastGoAway(t *testing.T) {
	skipH2OnPlainCore(t)
	checkGoroutines(t)
	f := newFixture(t)
	app := startHTTPBackend(t, "app")
	for _, shutdown := range []bool{false, true} {
		cfg := Config{Certs: f.store, Mode: ModeHTTP, Default: app.target()}
		if !shutdown {
			cfg.ClientTimeout = time.Second // short, and long past a scheduling stall before the request
		}
		s, addr := startProxy(t, cfg)
		h := dialH2Raw(t, f, addr)
		if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.block("/"), EndStream: true, EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
		if r := h.reply(t); r.status != "200 " {
			t.Fatalf("shutdown=%v: %v", shutdown, r)
		}
		done := make(chan error, 1)
		if shutdown {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				done <- s.Shutdown(ctx)
			}()
		}
		goaway, closed, _ := h.outcome(10 * time.Second)
		h.c.Close()
		if goaway == nil || goaway.ErrCode != http2.ErrCodeNo || goaway.LastStreamID != 1 || !closed {
			t.Errorf("shutdown=%v: GOAWAY %v, closed %v; want GOAWAY NO_ERROR last stream 1, then the close", shutdown, goaway, closed)
		}
		if shutdown {
			if err := <-done; err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		}
	}
}

// TestH2FastManyStreams: 500 requests at once on one connection (past the
// 250 streams allowed at a time, which the client respects) all get their
// own answer.
func TestH2FastManyStreams(t *testing.T) {
	skipH2OnPlainCore(t)
	checkGoroutines(t)
	f := newFixture(t)
	app := startHTTPBackend(t, "app")
	s, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: app.target()})
	hc := f.httpClient(addr, true)
	defer hc.CloseIdleConnections()
	var wg sync.WaitGroup
	errs := make(chan error, 500)
	for i := range 500 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := fmt.Sprintf("/s/%d", i)
			resp, seen := getJSONErr(hc, "https://app.test"+path)
			if resp == nil || resp.StatusCode != 200 || resp.ProtoMajor != 2 || seen.Path != path {
				errs <- fmt.Errorf("%s: %v %+v", path, resp, seen)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s.stats.h2Streams.Load() != 500 {
		t.Errorf("the fast path served %d streams, want 500", s.stats.h2Streams.Load())
	}
}

func getJSONErr(c *http.Client, url string) (*http.Response, seenRequest) {
	var seen seenRequest
	resp, err := c.Get(url)
	if err != nil {
		return nil, seen
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &seen)
	return resp, seen
}

// TestH2FastAccessLog: a stream on the fast path is logged as net/http's
// are; local paths log through the handler, once.
func TestH2FastAccessLog(t *testing.T) {
	skipH2OnPlainCore(t)
	checkGoroutines(t)
	f := newFixture(t)
	app := startHTTPBackend(t, "app")
	var logs syncbuf.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	_, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: app.target(), Evidence: evidenceHandler(), AccessLog: true, Logger: log})
	hc := f.httpClient(addr, true)
	defer hc.CloseIdleConnections()
	for _, p := range []string{"/fast?token=sekret", "/evidences/quote.json"} {
		resp, err := hc.Get("https://app.test" + p)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	var lines []map[string]any
	waitFor(t, 5*time.Second, "two access log lines", func() bool {
		lines = logLines(t, &logs, "request")
		return len(lines) >= 2
	})
	// A stream's line is written when it ends, which may be after the
	// client read the answer and sent its next request.
	slices.SortFunc(lines, func(a, b map[string]any) int { return strings.Compare(fmt.Sprint(a["path"]), fmt.Sprint(b["path"])) })
	lines[0], lines[1] = lines[1], lines[0] // "/fast" sorts after "/evidences/..."
	if len(lines) != 2 || lines[0]["path"] != "/fast" || lines[0]["status"] != 200.0 || lines[0]["backend"] != app.target().Addr ||
		lines[0]["client"] != "127.0.0.1" || lines[1]["path"] != "/evidences/quote.json" || lines[1]["backend"] != "local" {
		t.Errorf("access log: %v", lines)
	}
	if strings.Contains(logs.String(), "sekret") {
		t.Error("the access log carries a query string")
	}
}

// TestH2FastResetWhileBlocked: a stream whose response waits for window
// the client never grants ends when the client resets it: the connection
// then idles out (GOAWAY), which it cannot while the stream still runs.
func TestH2FastResetWhileBlocked(t *testing.T) {
	skipH2OnPlainCore(t)
	checkGoroutines(t)
	f := newFixture(t)
	be, _ := countingBackend(t)
	_, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: be, ClientTimeout: time.Second})
	h := dialH2Raw(t, f, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	defer h.c.Close()
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.block("/big"), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	// The response head comes; the body cannot.
	h.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		fr, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := fr.(*http2.HeadersFrame); ok {
			break
		}
		if s, ok := fr.(*http2.SettingsFrame); ok && !s.IsAck() {
			h.fr.WriteSettingsAck()
		}
	}
	if err := h.fr.WriteRSTStream(1, http2.ErrCodeCancel); err != nil {
		t.Fatal(err)
	}
	goaway, closed, _ := h.outcome(10 * time.Second)
	if goaway == nil || !closed {
		t.Fatalf("GOAWAY %v, closed %v: the reset stream still holds the connection", goaway, closed)
	}
}
