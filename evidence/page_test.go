package evidence

import (
	"context"
	"encoding/hex"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// simServed publishes testInput quoted by the simulator (an event log that
// replays) and serves it with live quotes.
func simServed(t *testing.T) (url string, s *Publisher, id Identity) {
	t.Helper()
	sim := newSim(t, true)
	p := newPublisher(t, simQuoter{sim}, "")
	if _, err := p.Publish(context.Background(), testInput(t, newTestPKI(t))); err != nil {
		t.Fatal(err)
	}
	srv := served(t, p, simQuoter{sim}, HandlerConfig{})
	return srv.URL, p, Identity{AppID: hex.EncodeToString(sim.AppID()), ComposeHash: hex.EncodeToString(sim.ComposeHash()),
		InstanceID: hex.EncodeToString(sim.InstanceID())}
}

// pageWants is what the index page must show of the bundle.
func pageWants(p *Publisher, id Identity) []string {
	want := []string{id.AppID, id.ComposeHash, id.InstanceID, "https://acme.example/acme/acct/12345",
		"example.com, www.example.com", "*.example.com", "api.example.org", "verifycli domain https://",
		"quote.json?nonce=", "sha256sum -c sha256sum.txt", "while read -r sum name"}
	for _, n := range p.Current().Names() {
		d, _ := p.Current().SHA256(n)
		want = append(want, n, hex.EncodeToString(d[:]))
	}
	return want
}

// TestIndexPage: the HTML index shows the identity the quote's event log
// states, the ACME account, each certificate's names and validity, the
// files with their hashes, that live quotes are offered, and the commands
// to verify; every answer about the bundle allows any origin to read it.
func TestIndexPage(t *testing.T) {
	url, p, id := simServed(t)
	resp, body := do(t, "GET", url+"/evidences/", map[string]string{"Accept": "text/html"})
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("index: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, w := range pageWants(p, id) {
		if !strings.Contains(body, w) {
			t.Errorf("the page does not show %q", w)
		}
	}
	if strings.Count(body, `class="cert"`) != 4 {
		t.Errorf("%d certificate rows, want 4 (cert.pem and three cert-<domain>.pem)", strings.Count(body, `class="cert"`))
	}
	for _, path := range []string{"/evidences/", "/evidences/cert.pem", "/evidences/quote.json?nonce=" + strings.Repeat("ab", 32)} {
		for _, m := range []string{"GET", "HEAD"} {
			if resp, _ := do(t, m, url+path, nil); resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "*" ||
				resp.Header.Get("Access-Control-Allow-Credentials") != "" {
				t.Errorf("%s %s: %d, Access-Control-Allow-Origin %q", m, path, resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
			}
		}
	}
	// Without a quoter the page says live quotes are not offered.
	plain := served(t, p, nil, HandlerConfig{})
	if _, body := do(t, "GET", plain.URL+"/evidences/", nil); !strings.Contains(body, "Not offered by this server") {
		t.Error("a server without live quotes claims them")
	}
}

// TestIndexPageInBrowser renders the page in headless Chromium and reads
// what a person sees: the text of the DOM after the browser parsed it.
func TestIndexPageInBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not installed (.ci/run installs it)")
	}
	url, p, id := simServed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--user-data-dir="+t.TempDir(),
		"--dump-dom", url+"/evidences/")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	dom := string(out)
	for _, w := range pageWants(p, id) {
		if !strings.Contains(dom, w) {
			t.Errorf("the rendered page does not show %q", w)
		}
	}
	if !strings.Contains(dom, `<h1>Evidence for 127.0.0.1:`) {
		t.Errorf("the rendered page has no heading naming the host:\n%.400s", dom)
	}
}
