package h2fast

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// testHost routes /b... to a real backend on loopback and answers every
// other path with a local handler.
type testHost struct{ backend string }

func (h testHost) Backend(host, path string) (string, bool) {
	return h.backend, strings.HasPrefix(path, "/b")
}

func (h testHost) Local(host, path string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, "local "+r.Method+" "+r.URL.Path+" "+string(b))
	})
}

func (testHost) Dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

func (testHost) Quitting() bool { return false }
func (testHost) Access(string, string, string, int, int64, time.Duration, string, string) {
}

func newTestEngine(t testing.TB) *Engine {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, "backend "+r.URL.Path+" "+string(b))
	}))
	t.Cleanup(be.Close)
	var n [4]atomic.Uint64
	e := New(context.Background(), Config{MaxHeaderBytes: 16 << 10, HeaderTimeout: time.Second, ClientTimeout: 100 * time.Millisecond,
		ServerTimeout: 2 * time.Second}, testHost{backend: strings.TrimPrefix(be.URL, "http://")},
		slog.New(slog.DiscardHandler), Counters{Streams: &n[0], ToBackends: &n[1], ToClients: &n[2], BackendErrors: &n[3]})
	t.Cleanup(e.Close)
	return e
}

// serveBytes serves one connection over a pipe whose client writes the
// preface and then in, reading whatever comes back. With hangUp it closes
// its end at once, else when the idle timeout ended the connection (or 4 s
// passed). Serve must then return: a connection that ends never leaves its
// goroutines behind.
func serveBytes(t testing.TB, e *Engine, in []byte, hangUp bool) []byte {
	srv, cl := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Serve(Client{Read: srv, Conn: srv, Write: func(p []byte) error { _, err := srv.Write(p); return err },
			CloseWrite: func() {}, IP: "127.0.0.1", Addr: "127.0.0.1:1"}, func(abort, kick func()) {})
	}()
	var out bytes.Buffer
	read := make(chan struct{})
	go func() {
		defer close(read)
		cl.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(&out, cl)
	}()
	cl.SetWriteDeadline(time.Now().Add(2 * time.Second))
	cl.Write(append([]byte(http2.ClientPreface), in...))
	if hangUp {
		cl.Close()
	}
	select {
	case <-done:
	case <-time.After(4 * time.Second):
		cl.Close() // the client goes: the server must follow
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("Serve did not return after the client closed (input %q)", in)
		}
	}
	cl.Close()
	<-read
	return out.Bytes()
}

// frames encodes a client's opening: SETTINGS, then a GET on stream 1 and a
// POST with a body on stream 3, to the backend or to the local handler.
func frames(path string) []byte {
	var buf, blk bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	fr.WriteSettings()
	enc := hpack.NewEncoder(&blk)
	for _, m := range []string{"GET", "POST"} {
		blk.Reset()
		for _, hf := range []hpack.HeaderField{{Name: ":method", Value: m}, {Name: ":scheme", Value: "https"},
			{Name: ":authority", Value: "a.test"}, {Name: ":path", Value: path}} {
			enc.WriteField(hf)
		}
		id := map[string]uint32{"GET": 1, "POST": 3}[m]
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: blk.Bytes(), EndStream: m == "GET", EndHeaders: true})
	}
	fr.WriteData(3, true, []byte("body"))
	fr.WriteGoAway(3, http2.ErrCodeNo, nil)
	return buf.Bytes()
}

// FuzzServe: whatever a client sends after the preface, the engine neither
// panics nor hangs, and the connection's goroutines end with it.
func FuzzServe(f *testing.F) {
	e := newTestEngine(f)
	f.Add(frames("/b/x"))
	f.Add(frames("/local"))
	f.Add([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0})
	f.Add([]byte{0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 64<<10 {
			return
		}
		serveBytes(t, e, in, true)
	})
}

// TestServeFrames: a well-formed opening gets both answers, from the
// backend and from the local handler.
func TestServeFrames(t *testing.T) {
	e := newTestEngine(t)
	for _, tc := range []struct{ path, want string }{{"/b/x", "backend /b/x body"}, {"/local", "local POST /local body"}} {
		out := serveBytes(t, e, frames(tc.path), false)
		if !bytes.Contains(out, []byte(tc.want)) {
			t.Errorf("%s: no %q in the answer %q", tc.path, tc.want, out)
		}
	}
}
