package proxy

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// net/http's HTTP/2 server with ReverseProxy (Config.PlainHTTP2) is the
// reference for the HTTP/2 fast path: the same frames go to both, and the
// backend must see the same request, the client the same response.

// The deliberate differences, each allowed for where it shows:
//   - Content-Type: net/http sniffs one for a body that came without it; the
//     fast path sends the backend's fields as they are, as nginx does.
//   - a request body without Content-Length that came whole before the
//     backend was asked goes with a length (nginx buffers and sends it so);
//     net/http streams it chunked.
//   - trailers of a chunked HTTP/1.1 response: net/http forwards them, the
//     fast path drops them (gRPC, which needs trailers, goes to h2c
//     backends, which net/http serves).
//   - a host routed to an h2c or TLS backend: net/http proxies it, the fast
//     path answers 421 and the client opens a connection for that host.

// h2Reply is one stream's response as the client saw it.
type h2Reply struct {
	status  string
	fields  []string // "name: value", sorted, without date
	body    string
	trailer []string
	reset   http2.ErrCode
}

func (r h2Reply) String() string {
	return r.status + " | " + strings.Join(r.fields, "; ") + " | " + r.body + " | trailer " + strings.Join(r.trailer, "; ") + " | rst " + r.reset.String()
}

// h2Exchange sends one request on stream 1 of a new connection: fields
// after the pseudo-fields, then body in DATA frames (none: END_STREAM on
// HEADERS), and reads the response.
func h2Exchange(t *testing.T, f *fixture, addr, authority, method, path string, body []string, fields ...hpack.HeaderField) h2Reply {
	t.Helper()
	h := dialH2Raw(t, f, addr)
	defer h.c.Close()
	h.buf.Reset()
	for _, hf := range append([]hpack.HeaderField{{Name: ":method", Value: method}, {Name: ":scheme", Value: "https"},
		{Name: ":authority", Value: authority}, {Name: ":path", Value: path}}, fields...) {
		h.enc.WriteField(hf)
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.buf.Bytes(), EndStream: body == nil, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	for i, b := range body {
		if err := h.fr.WriteData(1, i == len(body)-1, []byte(b)); err != nil {
			t.Fatal(err)
		}
	}
	return h.reply(t)
}

// reply reads stream 1's response until it ends.
func (h *h2raw) reply(t *testing.T) h2Reply {
	t.Helper()
	return h.replyOn(t, 1)
}

// replyOn reads stream id's response until it ends; frames of other
// streams are read past.
func (h *h2raw) replyOn(t *testing.T, id uint32) h2Reply {
	t.Helper()
	h.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	dec := hpack.NewDecoder(4096, nil)
	var r h2Reply
	var body strings.Builder
	var block []byte // a header block across CONTINUATION frames
	endAfterBlock := false
	for {
		fr, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the response: %v (so far %v)", err, r)
		}
		end := false
		if sid := fr.Header().StreamID; sid != 0 && sid != id {
			continue
		}
		switch fr := fr.(type) {
		case *http2.SettingsFrame:
			if !fr.IsAck() {
				h.fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			block = append(block[:0], fr.HeaderBlockFragment()...)
			endAfterBlock = fr.StreamEnded()
			if !fr.HeadersEnded() {
				continue
			}
			r.addBlock(decodeBlock(t, dec, block))
			end = endAfterBlock
		case *http2.ContinuationFrame:
			block = append(block, fr.HeaderBlockFragment()...)
			if !fr.HeadersEnded() {
				continue
			}
			r.addBlock(decodeBlock(t, dec, block))
			end = endAfterBlock
		case *http2.DataFrame:
			body.Write(fr.Data())
			end = fr.StreamEnded()
			if n := uint32(len(fr.Data())); n > 0 && !end {
				h.fr.WriteWindowUpdate(0, n)
				h.fr.WriteWindowUpdate(fr.StreamID, n)
			}
		case *http2.RSTStreamFrame:
			r.reset, end = fr.ErrCode, true
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v before the response ended (%v)", fr.ErrCode, r)
		}
		if end {
			r.body = body.String()
			return r
		}
	}
}

func decodeBlock(t *testing.T, dec *hpack.Decoder, block []byte) []hpack.HeaderField {
	t.Helper()
	hfs, err := dec.DecodeFull(block)
	if err != nil {
		t.Fatal(err)
	}
	return hfs
}

func (r *h2Reply) addBlock(hfs []hpack.HeaderField) {
	if r.status != "" && (len(hfs) == 0 || hfs[0].Name != ":status") {
		for _, hf := range hfs {
			r.trailer = append(r.trailer, hf.Name+": "+hf.Value)
		}
		return
	}
	r.fields = r.fields[:0]
	for _, hf := range hfs {
		switch {
		case hf.Name == ":status":
			r.status += hf.Value + " " // 1xx responses come first
		case hf.Name != "date":
			r.fields = append(r.fields, hf.Name+": "+hf.Value)
		}
	}
	slices.Sort(r.fields)
}

// TestH2FastAndNetHTTPAgreeOnRequests: the backend sees the same request
// and the client the same answer on both HTTP/2 paths.
func TestH2FastAndNetHTTPAgreeOnRequests(t *testing.T) {
	skipH2OnPlainCore(t)
	f := newFixture(t)
	be := startEchoBackend(t)
	evidence := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "evidence "+r.Method+" "+r.URL.Path+" "+r.Header.Get("X-A")+" "+r.Proto)
	})
	cfg := Config{Certs: f.store, Mode: ModeHTTP, Default: be, Evidence: evidence,
		Routes: []Route{{Host: "grpc.test", Target: Target{Scheme: SchemeH2C, Addr: be.Addr}}}}
	plain := cfg
	plain.PlainHTTP2 = true
	_, ref := startProxy(t, plain)
	s, fast := startProxy(t, cfg)
	hf := func(n, v string) hpack.HeaderField { return hpack.HeaderField{Name: n, Value: v} }
	for _, tc := range []struct {
		name, authority, method, path string
		body                          []string
		fields                        []hpack.HeaderField
	}{
		{"get", "app.test", "GET", "/a?b=c&d", nil, []hpack.HeaderField{hf("accept", "*/*"), hf("user-agent", "t")}},
		{"head", "app.test", "HEAD", "/h", nil, nil},
		{"repeated fields and cookie crumbs", "app.test", "GET", "/r", nil, []hpack.HeaderField{hf("x-a", "1"), hf("x-a", "2"), hf("cookie", "a=1"), hf("cookie", "b=2")}},
		{"post with length", "app.test", "POST", "/p", []string{"hel", "lo"}, []hpack.HeaderField{hf("content-length", "5"), hf("content-type", "text/plain")}},
		{"post without length", "app.test", "POST", "/s", []string{"abc", "def"}, nil},
		{"empty post", "app.test", "POST", "/e", nil, nil},
		{"client forwarding fields", "app.test", "GET", "/x", nil, []hpack.HeaderField{hf("x-forwarded-for", "6.6.6.6"), hf("x-forwarded-host", "evil"), hf("x-real-ip", "6.6.6.6"), hf("forwarded", "for=6.6.6.6")}},
		{"underscore field", "app.test", "GET", "/u", nil, []hpack.HeaderField{hf("x_under", "1")}},
		{"te trailers", "app.test", "GET", "/t", nil, []hpack.HeaderField{hf("te", "trailers")}},
		{"authority with port", "app.test:443", "GET", "/port", nil, nil},
		{"local path", "app.test", "GET", "/evidences/x", nil, []hpack.HeaderField{hf("x-a", "v")}},
		{"unrouted host", "other.test", "GET", "/", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := h2Exchange(t, f, ref, tc.authority, tc.method, tc.path, tc.body, tc.fields...)
			got := h2Exchange(t, f, fast, tc.authority, tc.method, tc.path, tc.body, tc.fields...)
			want.fields = withoutField(want.fields, "content-type", got.fields)
			if tc.name == "post without length" {
				// A body that came whole before the backend was asked goes
				// with a length, as nginx buffers and sends it; net/http
				// streams it chunked. Either way the backend reads abcdef.
				got.body = strings.Replace(got.body, `"Content-Length":["6"],`, "", 1)
				noLength := func(f string) bool { return strings.HasPrefix(f, "content-length: ") }
				got.fields = slices.DeleteFunc(got.fields, noLength)
				want.fields = slices.DeleteFunc(want.fields, noLength)
			}
			if want.String() != got.String() {
				t.Errorf("net/http: %v\nfast:     %v", want, got)
			}
		})
	}
	if s.stats.h2Streams.Load() == 0 {
		t.Error("the fast path served no stream")
	}
	t.Run("host routed elsewhere", func(t *testing.T) {
		// net/http would proxy it to the h2c backend; the fast path sends
		// the client to a connection of its own (RFC 9113 9.1.2).
		if got := h2Exchange(t, f, fast, "grpc.test", "GET", "/", nil); got.status != "421 " {
			t.Errorf("got %v, want 421", got)
		}
	})
}

// withoutField drops name from want where got has no such field (a listed
// divergence).
func withoutField(want []string, name string, got []string) []string {
	if slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, name+": ") }) {
		return want
	}
	return slices.DeleteFunc(want, func(s string) bool { return strings.HasPrefix(s, name+": ") })
}

// TestH2FastAndNetHTTPAgreeOnResponses: each way a backend frames its
// response reaches an HTTP/2 client the same on both paths.
func TestH2FastAndNetHTTPAgreeOnResponses(t *testing.T) {
	skipH2OnPlainCore(t)
	f := newFixture(t)
	for _, tc := range []struct{ name, method, resp string }{
		{"content-length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\nX-A: 1\r\n\r\nhello"},
		{"chunked", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"},
		{"no content", "GET", "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"},
		{"not modified", "GET", "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"},
		{"head with length", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 42\r\nContent-Type: text/plain\r\n\r\n"},
		{"early hints", "GET", "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"},
		{"error status", "GET", "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nContent-Type: text/plain\r\nRetry-After: 5\r\n\r\nbusy"},
		{"unusual status", "GET", "HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\n\r\n"},
		{"set-cookie twice", "GET", "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n"},
		{"hop-by-hop fields", "GET", "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nContent-Length: 1\r\nContent-Type: text/plain\r\n\r\nk"},
		{"body until close", "GET", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nto the end"},
		{"head past 16 KiB", "GET", "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("h", 20000) + "\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"},
		{"large body", "GET", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 200000\r\n\r\n" + strings.Repeat("z", 200000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got [2]h2Reply
			for i, plain := range []bool{true, false} {
				be := scriptedBackend(t, tc.resp)
				_, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: be.target(), PlainHTTP2: plain})
				got[i] = h2Exchange(t, f, addr, "app.test", tc.method, "/r", nil)
			}
			got[0].fields = withoutField(got[0].fields, "content-type", got[1].fields)
			if got[0].String() != got[1].String() {
				t.Errorf("net/http: %.300v\nfast:     %.300v", got[0], got[1])
			}
		})
	}
}
