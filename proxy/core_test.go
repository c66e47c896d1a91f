package proxy

import (
	"context"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPlainCoreSuite runs the whole proxy suite again with the fast path off
// (Config.PlainCore): the standard-library core alone must pass every test
// that is not about the fast path itself.
func TestPlainCoreSuite(t *testing.T) {
	if *plainCore {
		t.Skip("already on the plain core")
	}
	if testing.Short() {
		t.Skip("-short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^Test", "-test.count=1", "-test.timeout=5m", "-test.v", "-plain-core")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the suite on the plain core failed (%v):\n%s", err, out)
	}
	passed, skipped := strings.Count(string(out), "--- PASS: Test"), strings.Count(string(out), "not run on the plain core")
	h2 := strings.Count(string(out), "the plain core has no HTTP/2 fast path")
	if passed == 0 || skipped > 8 || h2 > 20 {
		t.Fatalf("plain core: %d tests passed, %d skipped as fast-path tests (at most 8 are), %d as HTTP/2 fast-path tests (at most 20):\n%s", passed, skipped, h2, out)
	}
	t.Logf("plain core: %d tests and subtests passed, %d skipped as fast-path tests, %d as HTTP/2 fast-path tests", passed, skipped, h2)
}

// TestPlainCoreIsPlain: with PlainCore, no raw socket I/O, no watcher and no
// HTTP/1.1 fast path are set up.
func TestPlainCoreIsPlain(t *testing.T) {
	f := newFixture(t)
	for _, mode := range []Mode{ModeTCP, ModeHTTP} {
		s, err := New(Config{Certs: f.store, Mode: mode, Default: Target{Addr: "127.0.0.1:9"}, PlainCore: true})
		if err != nil {
			t.Fatal(err)
		}
		if s.watch != nil || (s.http != nil && s.http.fast != nil) || s.rawIO(nil) != nil {
			t.Errorf("%s: plain core has a fast-path part: watch=%v fast=%v", mode, s.watch != nil, s.http != nil && s.http.fast != nil)
		}
		s.Shutdown(context.Background())
	}
}

// TestFastPathImports: the core reaches the fast path's packages
// (proxy/internal/...) only through fastpath.go, the documented switch, and
// built with -tags plaincore it links none of them.
func TestFastPathImports(t *testing.T) {
	const internal = "github.com/tee-ingress/tee-ingress/proxy/internal/"
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			if strings.HasPrefix(strings.Trim(imp.Path.Value, `"`), internal) && name != "fastpath.go" {
				t.Errorf("%s imports %s: only fastpath.go may reach the fast path's packages", name, imp.Path.Value)
			}
		}
	}
	deps := func(tags ...string) string {
		args := append(append([]string{"list"}, tags...), "-deps", ".")
		out, err := exec.Command("go", args...).Output()
		if err != nil {
			t.Fatalf("go %v: %v", args, err)
		}
		return string(out)
	}
	d := deps()
	for _, pkg := range []string{"rawio", "epoll", "h1", "h1fast", "backpool"} {
		if !strings.Contains(d, internal+pkg+"\n") {
			t.Errorf("the default build does not link the fast path's package %s:\n%s", pkg, d)
		}
	}
	if d := deps("-tags", "plaincore"); strings.Contains(d, internal) {
		t.Errorf("-tags plaincore still links a fast-path package:\n%s", d)
	}
	if out, err := exec.Command("go", "vet", "-tags", "plaincore", ".").CombinedOutput(); err != nil {
		t.Errorf("the plain-core build does not compile: %v\n%s", err, out)
	}
}
