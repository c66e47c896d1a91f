package proxy

import (
	"bytes"
	"context"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// h2specKnown are the h2spec cases net/http's HTTP/2 server fails, each
// with why (Config.PlainHTTP2, and the plain core). The HTTP/2 fast path
// fails none. The list may only shrink: TestH2Spec fails if one of these
// starts passing.
var h2specKnown = map[string]string{
	"http2/6.5.3: Sends multiple values of SETTINGS_INITIAL_WINDOW_SIZE":                                          "net/http closes the connection instead of applying the values in order",
	"http2/8.1.2.2: Sends a HEADERS frame that contains the connection-specific header field":                     "net/http's server accepts Connection and the like in HTTP/2 requests; ReverseProxy drops them before the backend",
	`http2/8.1.2.2: Sends a HEADERS frame that contains the TE header field with any value other than "trailers"`: "as above: accepted, and not forwarded",
}

type junitReport struct {
	Suites []struct {
		Cases []struct {
			Package string  `xml:"package,attr"`
			Name    string  `xml:"classname,attr"`
			Error   *string `xml:"error"`
			Failure *string `xml:"failure"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

// TestH2Spec runs h2spec (a tool dependency in go.mod) against http mode's
// listener, on the HTTP/2 fast path and on net/http, and compares what
// fails with what is known.
func TestH2Spec(t *testing.T) {
	if testing.Short() {
		t.Skip("h2spec takes about ten seconds")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "h2spec")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/summerwind/h2spec/cmd/h2spec").CombinedOutput(); err != nil {
		t.Fatalf("building h2spec: %v\n%s", err, out)
	}
	t.Run("fast", func(t *testing.T) {
		skipH2OnPlainCore(t)
		h2spec(ctx, t, bin, false, nil)
	})
	t.Run("net-http", func(t *testing.T) { h2spec(ctx, t, bin, true, h2specKnown) })
}

func h2spec(ctx context.Context, t *testing.T, bin string, plain bool, known map[string]string) {
	dir := t.TempDir()
	f := newFixture(t)
	app := startHTTPBackend(t, "app")
	s, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: app.target(), PlainHTTP2: plain})
	host, port, _ := strings.Cut(addr, ":")
	report := filepath.Join(dir, "report.xml")
	cmd := exec.CommandContext(ctx, bin, "-h", host, "-p", port, "-t", "-k", "-o", "3", "-j", report)
	out, _ := cmd.CombinedOutput() // exits 1 when anything fails; the report says what
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("no h2spec report: %v\n%s", err, out)
	}
	// A failure's message may quote frame bytes: XML cannot hold NUL.
	b = bytes.ReplaceAll(b, []byte{0}, []byte("\\x00"))
	var r junitReport
	if err := xml.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	failed, total := map[string]bool{}, 0
	for _, s := range r.Suites {
		for _, c := range s.Cases {
			total++
			if c.Error != nil || c.Failure != nil {
				failed[c.Package+": "+c.Name] = true
				if _, ok := known[c.Package+": "+c.Name]; !ok {
					t.Logf("%s: %s: %s", c.Package, c.Name, ptrOr(c.Error, c.Failure))
				}
			}
		}
	}
	if total < 140 {
		t.Fatalf("h2spec ran %d cases, want the 145 of its server suite\n%s", total, out)
	}
	for name := range failed {
		if _, ok := known[name]; !ok {
			t.Errorf("h2spec: new failure %q", name)
		}
	}
	for name := range known {
		if !failed[name] {
			t.Errorf("h2spec: %q passes now: remove it from h2specKnown", name)
		}
	}
	if fast := s.stats.h2Streams.Load(); plain != (fast == 0) {
		t.Errorf("the HTTP/2 fast path served %d streams (PlainHTTP2 %v)", fast, plain)
	}
	t.Logf("h2spec: %d cases, %d failed (all known)", total, len(failed))
}

func ptrOr(a, b *string) string {
	if a != nil {
		return *a
	}
	return *b
}
