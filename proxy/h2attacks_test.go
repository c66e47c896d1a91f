package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The known HTTP/2 attacks against http mode's listener, each sent by a raw
// frame-level client: the connection is closed or the damage is bounded,
// and goroutines and heap come back to where they were.

type h2raw struct {
	t   *testing.T
	c   *tls.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

func dialH2Raw(t *testing.T, f *fixture, addr string, settings ...http2.Setting) *h2raw {
	t.Helper()
	c := dialTLS(t, addr, f.clientTLS("app.test", "h2"))
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	h := &h2raw{t: t, c: c, fr: http2.NewFramer(c, c)}
	h.enc = hpack.NewEncoder(&h.buf)
	h.fr.SetMaxReadFrameSize(1 << 20)
	if err := h.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	return h
}

// block encodes a GET for path with extra fields.
func (h *h2raw) block(path string, extra ...hpack.HeaderField) []byte {
	h.buf.Reset()
	for _, hf := range append([]hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "https"},
		{Name: ":authority", Value: "app.test"}, {Name: ":path", Value: path}}, extra...) {
		h.enc.WriteField(hf)
	}
	return bytes.Clone(h.buf.Bytes())
}

// outcome reads frames until the connection ends or d passes: whether a
// GOAWAY came, whether the connection closed, and the status of each
// response HEADERS seen.
func (h *h2raw) outcome(d time.Duration) (goaway *http2.GoAwayFrame, closed bool, statuses []string) {
	h.c.SetReadDeadline(time.Now().Add(d))
	dec := hpack.NewDecoder(4096, nil)
	for {
		fr, err := h.fr.ReadFrame()
		if err != nil {
			var ne interface{ Timeout() bool }
			return goaway, !(errors.As(err, &ne) && ne.Timeout()), statuses
		}
		switch fr := fr.(type) {
		case *http2.GoAwayFrame:
			goaway = fr
		case *http2.HeadersFrame:
			hfs, _ := dec.DecodeFull(fr.HeaderBlockFragment())
			for _, hf := range hfs {
				if hf.Name == ":status" {
					statuses = append(statuses, hf.Value)
				}
			}
		case *http2.SettingsFrame:
			if !fr.IsAck() {
				h.fr.WriteSettingsAck()
			}
		}
	}
}

// backendCount is what countingBackend saw: requests, and the most held
// at once (/hold answers only when its request is cancelled).
type backendCount struct {
	n, inFlight, maxInFlight atomic.Int64
}

func countingBackend(t *testing.T) (Target, *backendCount) {
	bc := &backendCount{}
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bc.n.Add(1)
		if r.URL.Path == "/hold" {
			now := bc.inFlight.Add(1)
			for m := bc.maxInFlight.Load(); now > m && !bc.maxInFlight.CompareAndSwap(m, now); m = bc.maxInFlight.Load() {
			}
			<-r.Context().Done()
			bc.inFlight.Add(-1)
			return
		}
		if r.URL.Path == "/big" {
			w.Write(bytes.Repeat([]byte("b"), 1<<20))
			return
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(be.Close)
	return Target{Scheme: SchemeHTTP, Addr: strings.TrimPrefix(be.URL, "http://")}, bc
}

// heapSettles waits for the live heap to come back within 8 MiB of base.
func heapSettles(t *testing.T, base uint64) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("the heap to come back near its %d MiB before the attack", base>>20),
		func() bool { return heapNow() < base+8<<20 })
}

func heapNow() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// bothH2Paths runs an attack on the HTTP/2 fast path and on net/http's
// server (Config.PlainHTTP2): the fast path must hold at least as well.
func bothH2Paths(t *testing.T, run func(t *testing.T, plain bool)) {
	t.Run("fast", func(t *testing.T) {
		skipH2OnPlainCore(t)
		run(t, false)
	})
	t.Run("net-http", func(t *testing.T) { run(t, true) })
}

// attack starts http mode in front of a counting backend and dials it as a
// raw HTTP/2 client. When the test ends (the connection closed first),
// goroutines and the heap must be back where they were.
func attack(t *testing.T, plain bool, settings ...http2.Setting) (*h2raw, *backendCount) {
	t.Helper()
	checkGoroutines(t)
	f := newFixture(t)
	be, bc := countingBackend(t)
	_, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: be, PlainHTTP2: plain})
	base := heapNow()
	t.Cleanup(func() {
		if !t.Failed() {
			heapSettles(t, base)
		}
	})
	return dialH2Raw(t, f, addr, settings...), bc
}

// TestH2RapidReset (CVE-2023-44487): 5000 streams opened and reset at once
// hold the backend at most MaxConcurrentStreams (250) at a time, however
// fast the client resets them; nothing is left behind.
func TestH2RapidReset(t *testing.T) { bothH2Paths(t, h2RapidReset) }

func h2RapidReset(t *testing.T, plain bool) {
	h, bc := attack(t, plain)
	blk := h.block("/hold")
	for id := uint32(1); id < 10000; id += 2 {
		if h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: blk, EndStream: true, EndHeaders: true}) != nil {
			break // the server closed the connection
		}
		if h.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
			break
		}
	}
	goaway, closed, _ := h.outcome(5 * time.Second)
	h.c.Close()
	t.Logf("rapid reset: backend saw %d of 5000 requests, at most %d at once; GOAWAY %v, closed %v", bc.n.Load(), bc.maxInFlight.Load(), goaway != nil, closed)
	if m := bc.maxInFlight.Load(); m > 250 {
		t.Fatalf("%d requests held the backend at once, past MaxConcurrentStreams 250", m)
	}
	waitFor(t, 10*time.Second, "the backend's requests to end", func() bool { return bc.inFlight.Load() == 0 })
}

// TestH2StreamLimit: a client opening more streams than it was allowed
// gets them refused; at most 250 hold the backend.
func TestH2StreamLimit(t *testing.T) { bothH2Paths(t, h2StreamLimit) }

func h2StreamLimit(t *testing.T, plain bool) {
	h, bc := attack(t, plain)
	blk := h.block("/hold")
	for id := uint32(1); id <= 2*300; id += 2 {
		if h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: blk, EndStream: true, EndHeaders: true}) != nil {
			break
		}
	}
	waitFor(t, 10*time.Second, "250 requests at the backend", func() bool { return bc.inFlight.Load() >= 250 })
	refused := 0
	h.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for refused < 50 {
		fr, err := h.fr.ReadFrame()
		if err != nil {
			break
		}
		if rst, ok := fr.(*http2.RSTStreamFrame); ok && (rst.ErrCode == http2.ErrCodeRefusedStream || rst.ErrCode == http2.ErrCodeProtocol) {
			refused++
		}
		if _, ok := fr.(*http2.GoAwayFrame); ok {
			refused = 50 // the whole connection refused: also bounded
		}
	}
	if m := bc.maxInFlight.Load(); m > 250 || refused < 50 {
		t.Fatalf("%d held the backend at once (at most 250), %d of the 50 extra streams refused", m, refused)
	}
	h.c.Close()
	waitFor(t, 10*time.Second, "the held requests to end", func() bool { return bc.inFlight.Load() == 0 })
}

// TestH2ContinuationFlood (CVE-2024-27316): a header block that never ends,
// sent as endless CONTINUATION frames, ends the connection once it passes
// the header limit; the proxy does not buffer the flood.
func TestH2ContinuationFlood(t *testing.T) { bothH2Paths(t, h2ContinuationFlood) }

func h2ContinuationFlood(t *testing.T, plain bool) {
	h, bc := attack(t, plain)
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.block("/"), EndHeaders: false}); err != nil {
		t.Fatal(err)
	}
	junk := h.block("/", hpack.HeaderField{Name: "x-flood", Value: strings.Repeat("f", 8000)})
	sent := 0
	for ; sent < 64<<20; sent += len(junk) {
		if h.fr.WriteContinuation(1, false, junk) != nil {
			break
		}
	}
	goaway, closed, statuses := h.outcome(5 * time.Second)
	if sent >= 64<<20 || (!closed && goaway == nil) {
		t.Fatalf("%d MiB of CONTINUATION taken without the connection ending (GOAWAY %v, statuses %v)", sent>>20, goaway, statuses)
	}
	if bc.n.Load() != 0 {
		t.Fatal("the flooded request reached the backend")
	}
	t.Logf("continuation flood: connection ended after %d KiB", sent>>10)
	h.c.Close()
}

// TestH2HPACKBomb: a 4 KiB header value put in the dynamic table once and
// referenced 2000 times (a few KiB on the wire, 8 MiB decoded) is refused
// before it reaches the backend.
func TestH2HPACKBomb(t *testing.T) { bothH2Paths(t, h2HPACKBomb) }

func h2HPACKBomb(t *testing.T, plain bool) {
	h, bc := attack(t, plain)
	big := hpack.HeaderField{Name: "x-bomb", Value: strings.Repeat("b", 4000)}
	blk := h.block("/", big)
	// Index 62 is the newest dynamic entry: x-bomb. One byte each.
	for i := 0; i < 2000; i++ {
		blk = append(blk, 0x80|62)
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk[:min(len(blk), 16000)], EndStream: true, EndHeaders: len(blk) <= 16000}); err != nil {
		t.Fatal(err)
	}
	for rest := blk[min(len(blk), 16000):]; len(rest) > 0; {
		n := min(len(rest), 16000)
		if h.fr.WriteContinuation(1, n == len(rest), rest[:n]) != nil {
			break
		}
		rest = rest[n:]
	}
	goaway, closed, statuses := h.outcome(3 * time.Second)
	if bc.n.Load() != 0 || slices.Contains(statuses, "200") {
		t.Fatalf("the bomb reached the backend (%d requests, statuses %v)", bc.n.Load(), statuses)
	}
	t.Logf("HPACK bomb: statuses %v, GOAWAY %v, closed %v", statuses, goaway != nil, closed)
	h.c.Close()
}

// TestH2SettingsFlood: SETTINGS (and PINGs) sent without ever reading the
// acknowledgements end the connection once the server's queue of control
// frames is full, instead of growing it.
func TestH2SettingsFlood(t *testing.T) { bothH2Paths(t, h2SettingsFlood) }

func h2SettingsFlood(t *testing.T, plain bool) {
	h, _ := attack(t, plain)
	h.c.SetWriteDeadline(time.Now().Add(20 * time.Second))
	sent, err := 0, error(nil)
	for ; sent < 1_000_000 && err == nil; sent++ {
		if sent%2 == 0 {
			err = h.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100})
		} else {
			err = h.fr.WritePing(false, [8]byte{1})
		}
	}
	if err == nil {
		t.Fatalf("%d control frames taken without reading a reply, and the connection is still open", sent)
	}
	t.Logf("settings flood: connection ended after %d frames (%v)", sent, err)
	h.c.Close()
}

// TestH2ZeroWindow: a client that grants no flow-control window gets the
// response head but no body, the proxy does not buffer the 1 MiB body
// meanwhile, and when the client goes the backend request is cancelled.
func TestH2ZeroWindow(t *testing.T) { bothH2Paths(t, h2ZeroWindow) }

func h2ZeroWindow(t *testing.T, plain bool) {
	h, bc := attack(t, plain, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	base := heapNow()
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.block("/big"), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	h.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	var data int
	for {
		fr, err := h.fr.ReadFrame()
		if err != nil {
			break
		}
		if d, ok := fr.(*http2.DataFrame); ok {
			data += len(d.Data())
		}
		if s, ok := fr.(*http2.SettingsFrame); ok && !s.IsAck() {
			h.fr.WriteSettingsAck()
		}
	}
	if data != 0 || bc.n.Load() != 1 {
		t.Fatalf("%d body bytes sent into a zero window; backend saw %d requests", data, bc.n.Load())
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if ms.HeapAlloc > base+8<<20 {
		t.Fatalf("heap grew by %d MiB while the body waited", (ms.HeapAlloc-base)>>20)
	}
	h.c.Close()
}
