package evidence

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// served starts a real HTTP server with the evidence handler on loopback.
func served(t *testing.T, src BundleSource, q Quoter, cfg HandlerConfig) *httptest.Server {
	t.Helper()
	cfg.Source, cfg.Quoter = src, q
	h, err := NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func do(t *testing.T, method, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func publishedBundle(t *testing.T) (*Publisher, *unsignedQuoter) {
	t.Helper()
	q := newUnsignedQuoter(t)
	p := newPublisher(t, q, "")
	if _, err := p.Publish(context.Background(), testInput(t, newTestPKI(t))); err != nil {
		t.Fatal(err)
	}
	return p, q
}

func TestHandlerBeforeFirstBundle(t *testing.T) {
	p := newPublisher(t, newUnsignedQuoter(t), "")
	srv := served(t, p, nil, HandlerConfig{})
	for _, path := range []string{"/evidences/", "/evidences/cert.pem", "/evidences/quote.json?nonce=" + strings.Repeat("00", 32)} {
		resp, _ := do(t, "GET", srv.URL+path, nil)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s: %d before the first bundle, want 503 with Retry-After", path, resp.StatusCode)
		}
	}
}

func TestHandlerFiles(t *testing.T) {
	p, _ := publishedBundle(t)
	b := p.Current()
	srv := served(t, p, nil, HandlerConfig{})
	types := map[string]string{AccountFile: "application/json", CertFile: "application/x-pem-file", "cert-*.example.com.pem": "application/x-pem-file",
		HistoryFile: "application/json", SHA256SumFile: "text/plain; charset=utf-8", QuoteFile: "application/json"}
	for name, ctype := range types {
		want, _ := b.File(name)
		d, _ := b.SHA256(name)
		etag := `"` + hex.EncodeToString(d[:]) + `"`
		for _, path := range []string{"/evidences/" + name, "/evidences/" + strings.ReplaceAll(name, "*", "%2A")} {
			resp, body := do(t, "GET", srv.URL+path, nil)
			if resp.StatusCode != 200 || body != string(want) {
				t.Fatalf("GET %s: %d, body differs: %v", path, resp.StatusCode, body != string(want))
			}
			for k, v := range map[string]string{"Content-Type": ctype, "Content-Length": fmt.Sprint(len(want)), "ETag": etag,
				"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"} {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("GET %s: %s = %q, want %q", path, k, got, v)
				}
			}
		}
		resp, body := do(t, "HEAD", srv.URL+"/evidences/"+name, nil)
		if resp.StatusCode != 200 || body != "" || resp.Header.Get("Content-Length") != fmt.Sprint(len(want)) || resp.Header.Get("ETag") != etag {
			t.Errorf("HEAD %s: %d len %q body %q", name, resp.StatusCode, resp.Header.Get("Content-Length"), body)
		}
		for _, inm := range []string{etag, "W/" + etag, `"x", ` + etag, "*"} {
			resp, body = do(t, "GET", srv.URL+"/evidences/"+name, map[string]string{"If-None-Match": inm})
			if resp.StatusCode != http.StatusNotModified || body != "" || resp.Header.Get("ETag") != etag {
				t.Errorf("If-None-Match %s on %s: %d", inm, name, resp.StatusCode)
			}
		}
		resp, _ = do(t, "GET", srv.URL+"/evidences/"+name, map[string]string{"If-None-Match": `"other"`})
		if resp.StatusCode != 200 {
			t.Errorf("If-None-Match other: %d", resp.StatusCode)
		}
	}
	for _, m := range []string{"POST", "PUT", "DELETE", "OPTIONS", "PATCH"} {
		resp, _ := do(t, m, srv.URL+"/evidences/cert.pem", nil)
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s: %d Allow %q", m, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
}

func TestHandlerIndex(t *testing.T) {
	p, _ := publishedBundle(t)
	b := p.Current()
	srv := served(t, p, nil, HandlerConfig{})

	resp, _ := do(t, "GET", srv.URL+"/evidences?x=1", nil)
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/evidences/?x=1" {
		t.Fatalf("/evidences: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}

	resp, body := do(t, "GET", srv.URL+"/evidences/", map[string]string{"Accept": "application/json"})
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || !strings.Contains(resp.Header.Get("Vary"), "Accept") {
		t.Fatalf("json index: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var idx Index
	if err := json.Unmarshal([]byte(body), &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Files) != len(b.Names()) {
		t.Fatalf("index lists %d files, want %d", len(idx.Files), len(b.Names()))
	}
	for i, f := range idx.Files {
		data, _ := b.File(f.Name)
		d, _ := b.SHA256(f.Name)
		if f.Name != b.Names()[i] || f.Size != len(data) || f.SHA256 != hex.EncodeToString(d[:]) {
			t.Errorf("index entry %+v", f)
		}
		// The url works.
		r, got := do(t, "GET", srv.URL+f.URL, nil)
		if r.StatusCode != 200 || got != string(data) {
			t.Errorf("index url %s: %d", f.URL, r.StatusCode)
		}
	}

	for _, accept := range []string{"", "*/*", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "application/json;q=0.5, text/html"} {
		resp, body = do(t, "GET", srv.URL+"/evidences/", map[string]string{"Accept": accept})
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" || !strings.Contains(body, "cert-*.example.com.pem") {
			t.Errorf("Accept %q: %d %q", accept, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	if !strings.Contains(body, `href="/evidences/cert-%2A.example.com.pem"`) {
		t.Errorf("html links not escaped:\n%s", body)
	}
	resp, _ = do(t, "GET", srv.URL+"/evidences/", map[string]string{"Accept": "text/html;q=0.1, application/json"})
	if resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("preferred json: %q", resp.Header.Get("Content-Type"))
	}
	// ETags differ between the variants and revalidate.
	rh, _ := do(t, "GET", srv.URL+"/evidences/", nil)
	rj, _ := do(t, "GET", srv.URL+"/evidences/", map[string]string{"Accept": "application/json"})
	if rh.Header.Get("ETag") == rj.Header.Get("ETag") || rh.Header.Get("ETag") == "" {
		t.Errorf("index etags %q %q", rh.Header.Get("ETag"), rj.Header.Get("ETag"))
	}
	r304, _ := do(t, "GET", srv.URL+"/evidences/", map[string]string{"If-None-Match": rh.Header.Get("ETag")})
	if r304.StatusCode != http.StatusNotModified {
		t.Errorf("index revalidation: %d", r304.StatusCode)
	}
}

// rawRequest sends a request line as is, for paths a Go client would clean.
func rawRequest(t *testing.T, addr, target string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", target)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%q: %v", target, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestHandlerRefusesJunkPaths(t *testing.T) {
	p, _ := publishedBundle(t)
	srv := served(t, p, nil, HandlerConfig{})
	addr := strings.TrimPrefix(srv.URL, "http://")
	cases := []struct {
		target string
		want   int
	}{
		{"/evidences/../etc/passwd", 404},
		{"/evidences/..", 404},
		{"/evidences/.", 404},
		{"/evidences/%2e%2e/%2e%2e/etc/passwd", 404},
		{"/evidences/..%2fetc%2fpasswd", 404},
		{"/evidences/..%2Fcert.pem", 404},
		{"/evidences/sub%2fcert.pem", 404},
		{"/evidences/.current%2fcert.pem", 404},
		{"/evidences/.current/cert.pem", 404},
		{"/evidences/.v-1/cert.pem", 404},
		{"/evidences/cert.pem%00", 404},
		{"/evidences/cert.pem%00.txt", 404},
		{"/evidences/..%5ccert.pem", 404},
		{"/evidences/%5c..%5ccert.pem", 404},
		{"/evidences/cert.pem/", 404},
		{"/evidences/cert.pem/x", 404},
		{"/evidences//cert.pem", 404},
		{"/evidences/CERT.PEM", 404},
		{"/evidences/cert-unknown.example.com.pem", 404},
		{"/evidences/private.key", 404},
		{"/evidences/" + strings.Repeat("a", 5000), 404},
		{"/evidences/cert-" + strings.Repeat("a.", 200) + "com.pem", 404},
		{"/evidences/%", 400},
		{"/evidencesx", 404},
		{"/evidences.json", 404},
		{"/", 404},
		{"/etc/passwd", 404},
		{"/evidences/cert.pem", 200},
		{"/evidences/cert%2Dexample.com.pem", 200},
	}
	for _, c := range cases {
		if got := rawRequest(t, addr, c.target); got != c.want {
			t.Errorf("GET %s: %d, want %d", c.target, got, c.want)
		}
	}
}

func TestHandlerLiveQuote(t *testing.T) {
	p, q := publishedBundle(t)
	b := p.Current()
	// A client has half the burst: 2 of 4.
	srv := served(t, p, q, HandlerConfig{LiveQuoteRate: rate.Every(time.Hour), LiveQuoteBurst: 4})
	nonce := [32]byte{1, 2, 3, 31: 0xff}
	resp, body := do(t, "GET", srv.URL+"/evidences/quote.json?nonce="+hex.EncodeToString(nonce[:]), nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("live quote: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	lq, err := ParseQuoteJSON([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	tq, _ := ParseTDQuote(lq.Quote)
	if tq.ReportData != BundleReportData(b.SumsDigest(), nonce) {
		t.Fatalf("live report_data %x", tq.ReportData)
	}
	// The bundle with the live quote verifies for this nonce and not for another.
	files := b.Files()
	files[QuoteFile] = []byte(body)
	pb, _ := ParseBundle(files)
	wantStatus(t, bundleChecks(pb, VerifyOptions{Nonce: &nonce}, false), CheckReportData, Pass)
	other := nonce
	other[0] ^= 1
	c := checkByName(t, bundleChecks(pb, VerifyOptions{Nonce: &other}, false), CheckReportData)
	if c.Status != Fail || !strings.Contains(c.Hint, "another nonce") {
		t.Fatalf("replayed nonce: %+v", c)
	}

	for _, bad := range []string{"", "00", strings.Repeat("zz", 32), strings.Repeat("0", 65), strings.Repeat("00", 32) + "&nonce=" + strings.Repeat("00", 32)} {
		resp, body := do(t, "GET", srv.URL+"/evidences/quote.json?nonce="+bad, nil)
		if resp.StatusCode != 400 || !strings.Contains(body, "64 hex characters") {
			t.Errorf("nonce %q: %d %q", bad, resp.StatusCode, body)
		}
	}
	// The client's burst of 2: one left, then 429.
	calls := q.calls.Load()
	resp, _ = do(t, "GET", srv.URL+"/evidences/quote.json?nonce="+hex.EncodeToString(other[:]), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("second live quote: %d", resp.StatusCode)
	}
	resp, _ = do(t, "GET", srv.URL+"/evidences/quote.json?nonce="+hex.EncodeToString(other[:]), nil)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("over the limit: %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if q.calls.Load() != calls+1 {
		t.Fatal("a refused request reached the quoter")
	}
	// The published quote is not rate-limited.
	for range 5 {
		if resp, _ := do(t, "GET", srv.URL+"/evidences/quote.json", nil); resp.StatusCode != 200 {
			t.Fatalf("published quote: %d", resp.StatusCode)
		}
	}
}

// TestLiveQuotePerClient: a client asking for live quotes in a loop uses up
// its own budget, not everyone's: a client at another address still gets a
// live quote.
func TestLiveQuotePerClient(t *testing.T) {
	p, q := publishedBundle(t)
	srv := served(t, p, q, HandlerConfig{LiveQuoteRate: rate.Every(time.Hour), LiveQuoteBurst: 8})
	from := func(ip string) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
	}
	url := srv.URL + "/evidences/quote.json?nonce=" + strings.Repeat("ab", 32)
	get := func(c *http.Client) (int, string) {
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	flood := from("127.0.0.1")
	ok, refused := 0, 0
	for range 20 {
		switch code, body := get(flood); code {
		case 200:
			ok++
		case http.StatusTooManyRequests:
			refused++
			if !strings.Contains(body, "from your address") {
				t.Fatalf("429 body %q does not say the limit is the client's", body)
			}
		default:
			t.Fatalf("flooding client: %d", code)
		}
	}
	if ok != 4 || refused != 16 {
		t.Fatalf("flooding client: %d served, %d refused; want its own burst of 4, then 429", ok, refused)
	}
	other := from("127.0.0.2")
	for i := range 4 {
		if code, body := get(other); code != 200 {
			t.Fatalf("the other client's live quote %d: %d %q", i, code, body)
		}
	}
}

func TestClientKey(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:443":              "127.0.0.1",
		"[::ffff:10.0.0.1]:1":        "10.0.0.1",
		"[2001:db8:1:2:3:4:5:6]:443": "2001:db8:1:2::/64",
		"[2001:db8:1:2::9]:1":        "2001:db8:1:2::/64",
		"@":                          "@",
	} {
		if got := clientKey(in); got != want {
			t.Errorf("clientKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHandlerLiveQuoteFailures(t *testing.T) {
	p, q := publishedBundle(t)
	srv := served(t, p, q, HandlerConfig{})
	nonce := strings.Repeat("ab", 32)
	q.set(func(u *unsignedQuoter) { u.err = errTestQuoter })
	if resp, body := do(t, "GET", srv.URL+"/evidences/quote.json?nonce="+nonce, nil); resp.StatusCode != http.StatusBadGateway || strings.Contains(body, "unreachable") {
		t.Fatalf("agent down: %d %q", resp.StatusCode, body)
	}
	q.set(func(u *unsignedQuoter) { u.err = nil; u.mutate = func(rd *[64]byte) { rd[40] ^= 1 } })
	if resp, _ := do(t, "GET", srv.URL+"/evidences/quote.json?nonce="+nonce, nil); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("wrong nonce from the agent: %d", resp.StatusCode)
	}
	srv2 := served(t, p, nil, HandlerConfig{})
	if resp, _ := do(t, "GET", srv2.URL+"/evidences/quote.json?nonce="+nonce, nil); resp.StatusCode != http.StatusNotImplemented {
		t.Fatalf("no quoter: %d", resp.StatusCode)
	}
	if _, err := NewHandler(HandlerConfig{}); err == nil || !strings.Contains(err.Error(), "Source") {
		t.Fatalf("no source: %v", err)
	}
	if _, err := NewHandler(HandlerConfig{Source: p, LiveQuoteBurst: -1}); err == nil {
		t.Fatal("negative burst accepted")
	}
}

func TestFetchBundleFromHandler(t *testing.T) {
	p, q := publishedBundle(t)
	srv := served(t, p, q, HandlerConfig{})
	c := &http.Client{Timeout: 10 * time.Second}
	files, err := FetchBundle(context.Background(), c, srv.URL+"/evidences", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !mapsEqualBytes(files, p.Current().Files()) {
		t.Fatal("fetched files differ from the bundle")
	}
	nonce := [32]byte{9}
	files, err = FetchBundle(context.Background(), c, srv.URL+"/evidences/", &nonce)
	if err != nil {
		t.Fatal(err)
	}
	pb, _ := ParseBundle(files)
	wantStatus(t, bundleChecks(pb, VerifyOptions{Nonce: &nonce}, false), CheckReportData, Pass)
	if _, err := FetchBundle(context.Background(), c, served(t, p, nil, HandlerConfig{}).URL+"/evidences/", &nonce); err == nil {
		t.Fatal("live quote from a server without a Quoter")
	}

	// A server without an index (dstack-ingress): names from sha256sum.txt.
	mux := http.NewServeMux()
	b := p.Current()
	mux.HandleFunc("/evidences/{name}", func(w http.ResponseWriter, r *http.Request) {
		f, ok := b.File(r.PathValue("name"))
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(f)
	})
	plain := httptest.NewServer(mux)
	defer plain.Close()
	files2, err := FetchBundle(context.Background(), c, plain.URL+"/evidences/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !mapsEqualBytes(files2, b.Files()) {
		t.Fatal("fetched files (no index) differ")
	}
	if _, err := FetchBundle(context.Background(), c, "ftp://x/evidences/", nil); err == nil {
		t.Fatal("ftp accepted")
	}
}

func mapsEqualBytes(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || string(w) != string(v) {
			return false
		}
	}
	return true
}

// TestClientBudgetsBounded: the per-client table never grows past
// maxClients; quiet clients are forgotten to make room, and when every one
// is busy newcomers share one bucket.
func TestClientBudgetsBounded(t *testing.T) {
	c := &clientBudgets{rate: rate.Every(time.Hour), burst: 2, m: map[string]*rate.Limiter{}}
	for i := range maxClients {
		c.reserve(fmt.Sprintf("10.0.%d.%d", i/256, i%256)) // one token each: busy
	}
	if r := c.reserve("192.0.2.1"); !r.OK() || len(c.m) != maxClients || c.overflow == nil {
		t.Fatalf("a newcomer with every client busy: table %d, overflow %v", len(c.m), c.overflow != nil)
	}
	// The overflow bucket is shared: its burst of 2 is soon gone.
	c.reserve("192.0.2.2")
	if d := c.reserve("192.0.2.3").Delay(); d == 0 {
		t.Fatal("the shared overflow bucket never runs out")
	}
	// A quiet client (full bucket) is forgotten when room is needed.
	c.m["10.0.0.0"] = rate.NewLimiter(c.rate, c.burst)
	c.reserve("198.51.100.1")
	if _, ok := c.m["198.51.100.1"]; !ok || len(c.m) != maxClients {
		t.Fatalf("with a quiet client to forget, the newcomer got no bucket (table %d)", len(c.m))
	}
}
