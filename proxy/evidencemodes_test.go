package proxy

import (
	"strings"
	"testing"
)

// TestEvidenceSameInBothModes runs one table of requests for the evidence
// root against tcp mode (sniffed, then the evidence handler on a parsed
// request) and http mode (the fast path and net/http): every answer is the
// same. Spellings of the root other than the exact one (a doubled slash,
// dot segments, another case, percent-encoding) are the app's in both
// modes: the bundle lives at one path, and a client that means it asks for
// that path (browsers resolve dot segments before sending).
func TestEvidenceSameInBothModes(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	app := startHTTPBackend(t, "app")
	long := "GET /evidences/" + strings.Repeat("a", 70<<10) + " HTTP/1.1\r\nHost: app.test\r\n\r\n"
	cases := []struct {
		name, method, req string
		status            int
		backend           bool   // answered by the app
		header            string // "Name: value" the answer must carry
	}{
		{"GET a file", "GET", "GET /evidences/quote.json HTTP/1.1\r\nHost: app.test\r\n\r\n", 200, false, "Etag: \"e1\""},
		{"HEAD a file", "HEAD", "HEAD /evidences/quote.json HTTP/1.1\r\nHost: app.test\r\n\r\n", 200, false, "Etag: \"e1\""},
		{"index", "GET", "GET /evidences HTTP/1.1\r\nHost: app.test\r\n\r\n", 200, false, ""},
		{"missing file", "GET", "GET /evidences/nope.pem HTTP/1.1\r\nHost: app.test\r\n\r\n", 404, false, ""},
		{"POST", "POST", "POST /evidences/quote.json HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2\r\n\r\nhi", 405, false, "Allow: GET, HEAD"},
		{"DELETE", "DELETE", "DELETE /evidences/ HTTP/1.1\r\nHost: app.test\r\n\r\n", 405, false, "Allow: GET, HEAD"},
		{"OPTIONS", "OPTIONS", "OPTIONS /evidences HTTP/1.1\r\nHost: app.test\r\n\r\n", 405, false, "Allow: GET, HEAD"},
		{"request line over the limit", "GET", long, 431, false, ""},
		{"doubled slash", "GET", "GET //evidences/quote.json HTTP/1.1\r\nHost: app.test\r\n\r\n", 200, true, ""},
		{"dot segments", "GET", "GET /x/../evidences/quote.json HTTP/1.1\r\nHost: app.test\r\n\r\n", 200, true, ""},
		{"other case", "GET", "GET /Evidences/quote.json HTTP/1.1\r\nHost: app.test\r\n\r\n", 200, true, ""},
		{"percent-encoded root", "GET", "GET /%65vidences/quote.json HTTP/1.1\r\nHost: app.test\r\n\r\n", 200, true, ""},
		{"longer segment", "GET", "GET /evidencesX HTTP/1.1\r\nHost: app.test\r\n\r\n", 200, true, ""},
	}
	for _, mode := range []Mode{ModeTCP, ModeHTTP} {
		target := Target{Addr: strings.TrimPrefix(app.URL, "http://")}
		if mode == ModeHTTP {
			target.Scheme = SchemeHTTP
		}
		_, addr := startProxy(t, Config{Certs: f.store, Mode: mode, Default: target, Evidence: evidenceHandler()})
		for _, tc := range cases {
			t.Run(mode.String()+"/"+tc.name, func(t *testing.T) {
				c := dialH1(t, f, addr)
				defer c.c.Close()
				c.send(tc.req)
				resp, body := c.read(tc.method)
				if resp.StatusCode != tc.status {
					t.Fatalf("status %d, want %d (%.120q)", resp.StatusCode, tc.status, body)
				}
				if fromApp := strings.Contains(body, `"backend":"app"`); fromApp != tc.backend {
					t.Fatalf("answered by the app: %v, want %v (%.120q)", fromApp, tc.backend, body)
				}
				if name, value, ok := strings.Cut(tc.header, ": "); ok && resp.Header.Get(name) != value {
					t.Fatalf("%s: %q, want %q", name, resp.Header.Get(name), value)
				}
			})
		}
	}
}
