package h1

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
)

// TestH1ParseRequestHead: the subset, line by line.
func TestH1ParseRequestHead(t *testing.T) {
	for _, tc := range []struct {
		head  string
		plain bool
		cl    int64
		close bool
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true, -1, false},
		{"POST /x?a=b&c HTTP/1.1\r\nhost: a:8443\r\ncontent-length: 0012\r\nConnection: keep-alive, close\r\n\r\n", true, 12, true},
		{"GET /a%2Fb?x=%41 HTTP/1.1\r\nHost: [::1]:443\r\nX: \t v \t\r\n\r\n", false, -1, false}, // '%' in the path
		{"GET /x?a=%41 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n", true, -1, false},
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n", false, 0, false},
		{"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n", false, 0, false},
		{"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 \r\n\r\n", true, 1, false}, // OWS is not part of the value
		{"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,1\r\n\r\n", false, 0, false},
		{"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 9999999999999999999\r\n\r\n", false, 0, false},
		{"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", false, 0, false},
		{"GET / HTTP/1.1\r\nHost: a\r\nX\x7f: v\r\n\r\n", false, 0, false},
		{"GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", false, 0, false},
		{"GET / HTTP/1.1\r\nHost: a\rX: v\r\n\r\n", false, 0, false},
		{"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", false, 0, false},
		{"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", false, 0, false},
		{"GET /#f HTTP/1.1\r\nHost: a\r\n\r\n", false, 0, false},
		{"GET /a\"b HTTP/1.1\r\nHost: a\r\n\r\n", false, 0, false}, // net/http would send /a%22b
		{"GET /a{b}|c HTTP/1.1\r\nHost: a\r\n\r\n", false, 0, false},
		{"GET /a:b@c/[d]!$&'()*+,;= HTTP/1.1\r\nHost: a\r\n\r\n", true, -1, false},
		{"GET /a?b=\"c\"|{} HTTP/1.1\r\nHost: a\r\n\r\n", true, -1, false}, // the query is passed as it is
		{"GET /?a;b HTTP/1.1\r\nHost: a\r\n\r\n", false, 0, false},
		{"GET * HTTP/1.1\r\nHost: a\r\n\r\n", false, 0, false},
		{"CONNECT a:1 HTTP/1.1\r\nHost: a\r\n\r\n", false, 0, false},
		{"PRI * HTTP/2.0\r\n\r\n", false, 0, false},
		{"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", false, 0, false},
		{"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", false, 0, false},
	} {
		n := HeadEnd([]byte(tc.head))
		if n < 0 {
			t.Errorf("%q: no end of head found", tc.head)
			continue
		}
		req, ok := ParseRequestHead([]byte(tc.head[:n]), nil)
		if ok != tc.plain {
			t.Errorf("%q: plain=%v, want %v", tc.head, ok, tc.plain)
			continue
		}
		if ok && (req.ContentLength != tc.cl || req.Close != tc.close) {
			t.Errorf("%q: length %d close %v, want %d %v", tc.head, req.ContentLength, req.Close, tc.cl, tc.close)
		}
	}
}

// TestChunkedReader: where a chunked body ends, whatever the split.
func TestChunkedReader(t *testing.T) {
	for _, tc := range []struct {
		body string
		ok   bool
		data int64
	}{
		{"0\r\n\r\n", true, 0},
		{"5\r\nhello\r\n0\r\n\r\n", true, 5},
		{"A;x=\"y\"\r\n0123456789\r\n0\r\nT: v\r\nU: w\r\n\r\n", true, 10},
		{"5\r\nhell\r\n0\r\n\r\n", false, 0},
		{"x\r\n", false, 0},
		{";\r\n", false, 0},
		{"5\nhello\r\n0\r\n\r\n", false, 0},
		{"1000000000000000\r\n", false, 0},
		{"0\r\nT: \x01\r\n\r\n", false, 0},
	} {
		for split := 1; split <= len(tc.body); split++ {
			var c ChunkedReader
			b := []byte(tc.body + "NEXT")
			var err error
			done, used := false, 0
			for i := 0; i < len(b) && !done && err == nil; i += split {
				var n int
				n, done, err = c.Feed(b[i:min(i+split, len(b))])
				used += n
			}
			if tc.ok && (err != nil || !done || used != len(tc.body) || c.data != tc.data) {
				t.Errorf("%q split %d: done=%v used=%d data=%d err=%v", tc.body, split, done, used, c.data, err)
			}
			if !tc.ok && err == nil {
				t.Errorf("%q split %d: accepted", tc.body, split)
			}
		}
	}
}

// FuzzParseRequestHead: any bytes are refused or parsed into a head whose
// framing is unambiguous, without panicking.
func FuzzParseRequestHead(f *testing.F) {
	f.Add("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	f.Add("POST /x?a=b HTTP/1.1\r\nHost: a:1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
	f.Add("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n")
	f.Add("GET /a?b=%41 HTTP/1.1\r\nHost: [::1]:8443\r\nContent-Length: 0\r\nX: y\r\n\r\n")
	f.Add("DELETE /x HTTP/1.1\r\nhost: a\r\nconnection: keep-alive\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n")
	f.Add("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\nX_Y: 1\r\n\r\n")
	f.Fuzz(func(t *testing.T, s string) {
		b := []byte(s)
		n := HeadEnd(b)
		if n < 0 {
			return
		}
		req, ok := ParseRequestHead(b[:n], nil)
		if req.Reject != "" {
			// Refused only for a Transfer-Encoding that makes the length
			// ambiguous (RFC 9112 section 6.3).
			te := false
			for _, h := range req.Headers {
				te = te || equalFold(h.Name, "transfer-encoding")
			}
			if ok || !te {
				t.Fatalf("%q: refused (%s) with ok=%v, Transfer-Encoding present %v", s, req.Reject, ok, te)
			}
		}
		if !ok {
			return
		}
		if !ValidHost(req.Host) || req.ContentLength < -1 {
			t.Fatalf("%q: accepted host %q length %d", s, req.Host, req.ContentLength)
		}
		lengths := 0
		for _, h := range req.Headers {
			if equalFold(h.Name, "transfer-encoding") {
				t.Fatalf("%q: a Transfer-Encoding request was taken", s)
			}
			if equalFold(h.Name, "content-length") {
				lengths++
			}
			if !isToken(h.Name) || strings.ContainsAny(string(h.Value), "\r\n\x00") {
				t.Fatalf("%q: header %q: %q", s, h.Name, h.Value)
			}
		}
		if lengths > 1 || (lengths == 1) != (req.ContentLength >= 0) {
			t.Fatalf("%q: %d Content-Length headers, length %d", s, lengths, req.ContentLength)
		}
		// What we take, net/http reads the same way: same request line,
		// Host and framing, so the fast path and the handed-off path
		// cannot disagree on where a request ends.
		std, err := http.ReadRequest(bufio.NewReader(strings.NewReader(string(b[:n]))))
		if err != nil {
			t.Fatalf("%q: plain to us, net/http refuses it: %v", s, err)
		}
		wantCL := max(req.ContentLength, 0)
		if std.Method != string(req.Method) || std.RequestURI != string(req.Target) || std.Host != string(req.Host) || std.ContentLength != wantCL || len(std.TransferEncoding) != 0 {
			t.Fatalf("%q: net/http reads %s %s host %q length %d, we read %s %s host %q length %d", s, std.Method, std.RequestURI, std.Host, std.ContentLength, req.Method, req.Target, req.Host, wantCL)
		}
	})
}

// FuzzParseResponseHead: a backend's head we accept is framed as net/http's
// client would frame it.
func FuzzParseResponseHead(f *testing.F) {
	f.Add("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n")
	f.Add("HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\n\r\n")
	f.Add("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n")
	f.Fuzz(func(t *testing.T, s string) {
		b := []byte(s)
		n := HeadEnd(b)
		if n < 0 {
			return
		}
		resp, ok := ParseResponseHead(b[:n], nil)
		if !ok {
			return
		}
		std, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(b[:n]))), &http.Request{Method: "GET"})
		if err != nil {
			t.Fatalf("%q: we take it, net/http refuses it: %v", s, err)
		}
		if std.StatusCode != resp.Status {
			t.Fatalf("%q: status %d, net/http %d", s, resp.Status, std.StatusCode)
		}
		if resp.Status >= 200 && resp.Status != 204 && resp.Status != 304 {
			chunked := len(std.TransferEncoding) == 1 && std.TransferEncoding[0] == "chunked"
			if chunked != resp.Chunked || !chunked && std.ContentLength != resp.ContentLength {
				t.Fatalf("%q: chunked %v length %d, net/http %v %d", s, resp.Chunked, resp.ContentLength, std.TransferEncoding, std.ContentLength)
			}
		}
	})
}

// FuzzChunkedReader: the end of a chunked body does not depend on how its
// bytes are split.
func FuzzChunkedReader(f *testing.F) {
	f.Add([]byte("5\r\nhello\r\n0\r\nT: v\r\n\r\nrest"), uint8(3))
	f.Fuzz(func(t *testing.T, b []byte, split uint8) {
		var whole ChunkedReader
		n1, d1, e1 := whole.Feed(b)
		var parts ChunkedReader
		step := int(split)%7 + 1
		n2, d2 := 0, false
		var e2 error
		for i := 0; i < len(b) && !d2 && e2 == nil; i += step {
			var n int
			n, d2, e2 = parts.Feed(b[i:min(i+step, len(b))])
			n2 += n
		}
		if (e1 == nil) != (e2 == nil) || d1 != d2 || e1 == nil && n1 != n2 || whole.data != parts.data && e1 == nil {
			t.Fatalf("%q: whole (%d %v %v %d), split by %d (%d %v %v %d)", b, n1, d1, e1, whole.data, step, n2, d2, e2, parts.data)
		}
		if d1 && n1 > len(b) {
			t.Fatalf("used %d of %d bytes", n1, len(b))
		}
	})
}

// BenchmarkParseRequestHead: the fast path's request parser on a typical
// browser request; it must not allocate once its header slice has grown.
func BenchmarkParseRequestHead(b *testing.B) {
	head := []byte("GET /assets/app.js?v=3 HTTP/1.1\r\nHost: app.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n" +
		"Accept: */*\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\n" +
		"Referer: https://app.example.com/\r\nCookie: session=0123456789abcdef\r\n\r\n")
	var hdrs []Header
	b.ReportAllocs()
	b.SetBytes(int64(len(head)))
	for i := 0; i < b.N; i++ {
		n := HeadEnd(head)
		req, ok := ParseRequestHead(head[:n], hdrs)
		if !ok {
			b.Fatal("not plain")
		}
		hdrs = req.Headers[:0]
	}
}
