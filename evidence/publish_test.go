package evidence

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func newPublisher(t testing.TB, q Quoter, dir string) *Publisher {
	t.Helper()
	p, err := NewPublisher(PublisherConfig{Quoter: q, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// topLevel lists EVIDENCE_DIR's visible names.
func topLevel(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func TestPublishLayout(t *testing.T) {
	dir := t.TempDir()
	pki := newTestPKI(t)
	p := newPublisher(t, newUnsignedQuoter(t), dir)
	if p.Current() != nil {
		t.Fatal("bundle before Publish")
	}
	in := testInput(t, pki)
	b, err := p.Publish(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if p.Current() != b {
		t.Fatal("Current is not the published bundle")
	}
	for _, n := range b.Names() {
		got, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := b.File(n)
		if !bytes.Equal(got, want) {
			t.Fatalf("%s on disk differs", n)
		}
		if target, err := os.Readlink(filepath.Join(dir, n)); err != nil || target != ".current/"+n {
			t.Fatalf("%s: link %q %v", n, target, err)
		}
		fi, _ := os.Stat(filepath.Join(dir, n))
		if fi.Mode().Perm()&0o444 != 0o444 {
			t.Fatalf("%s not world-readable: %v", n, fi.Mode())
		}
	}
	if target, _ := os.Readlink(filepath.Join(dir, ".current")); target != ".v-1" {
		t.Fatalf(".current -> %q", target)
	}
	want := append(slices.Sorted(slices.Values(b.Names())), ".current", ".v-1")
	slices.Sort(want)
	if got := topLevel(t, dir); !slices.Equal(got, want) {
		t.Fatalf("dir holds %q, want %q", got, want)
	}

	// Remove a domain: its file is pruned, old versions are removed but the previous one.
	delete(in.Certs, "api.example.org")
	if _, err := p.Publish(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "cert-api.example.org.pem")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("removed domain's file still there: %v", err)
	}
	if _, err := p.Publish(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	got := topLevel(t, dir)
	if slices.Contains(got, ".v-1") || !slices.Contains(got, ".v-2") || !slices.Contains(got, ".v-3") {
		t.Fatalf("versions kept: %q, want .v-2 (previous) and .v-3", got)
	}
	for _, n := range got {
		if strings.HasPrefix(n, ".tmp-") {
			t.Fatalf("leftover %s", n)
		}
	}
	pb, err := LoadBundleDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cs := bundleChecks(pb, VerifyOptions{}, false); Failed(cs, false) {
		t.Fatalf("disk bundle fails: %v%s", failedNames(cs), dumpChecks(cs))
	}
}

// The documented manual check, with the real tools, on a bundle on disk.
func TestManualProcedure(t *testing.T) {
	for _, tool := range []string{"sha256sum", "jq", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (CI needs coreutils, jq, openssl): %v", tool, err)
		}
	}
	dir := t.TempDir()
	p := newPublisher(t, newUnsignedQuoter(t), dir)
	b, err := p.Publish(context.Background(), testInput(t, newTestPKI(t)))
	if err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %q: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	out := run("sha256sum", "-c", "sha256sum.txt")
	for _, n := range []string{AccountFile, CertFile, "cert-*.example.com.pem", HistoryFile} {
		if !strings.Contains(out, n+": OK") {
			t.Fatalf("sha256sum -c output lacks %s: OK:\n%s", n, out)
		}
	}
	sum := strings.Fields(run("sha256sum", "sha256sum.txt"))[0]
	quoteHex := strings.TrimSpace(run("jq", "-r", ".quote", "quote.json"))
	if len(sum) != 64 || !strings.Contains(quoteHex, sum) {
		t.Fatalf("sha256sum of sha256sum.txt %s not in the quote", sum)
	}
	if uri := strings.TrimSpace(run("jq", "-r", ".uri", "acme-account.json")); uri != "https://acme.example/acme/acct/12345" {
		t.Fatalf("jq .uri = %q", uri)
	}
	leaf := b.files[CertFile]
	blk, _ := pemDecode(leaf)
	fp := sha256.Sum256(blk)
	out = run("openssl", "x509", "-in", "cert.pem", "-noout", "-fingerprint", "-sha256")
	if !strings.Contains(strings.ReplaceAll(strings.ToLower(out), ":", ""), hex.EncodeToString(fp[:])) {
		t.Fatalf("openssl fingerprint %q, want %x", out, fp)
	}
	// The same from the pinned version folder.
	cmd := exec.Command("sh", "-c", "cd -P .current && sha256sum -c --quiet sha256sum.txt")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cd -P .current && sha256sum -c: %v\n%s", err, out)
	}
	// And a tampered file is caught by the same tool.
	if err := os.WriteFile(filepath.Join(dir, ".current", HistoryFile), []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command("sha256sum", "-c", "sha256sum.txt")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "history.json: FAILED") {
		t.Fatalf("sha256sum -c passes a tampered file: %v\n%s", err, out)
	}
}

func TestPublishFailsClosed(t *testing.T) {
	dir := t.TempDir()
	q := newUnsignedQuoter(t)
	p := newPublisher(t, q, dir)
	pki := newTestPKI(t)
	in := testInput(t, pki)
	first, err := p.Publish(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	before := snapshotDir(t, dir)
	q.set(func(u *unsignedQuoter) { u.err = errTestQuoter })
	renewed, _ := pki.chain(t, "example.com")
	in.Certs["example.com"] = renewed
	if _, err := p.Publish(context.Background(), in); !errors.Is(err, ErrQuote) {
		t.Fatalf("Publish with a failing agent: %v", err)
	}
	q.set(func(u *unsignedQuoter) { u.err = nil; u.mutate = func(rd *[64]byte) { rd[5] ^= 1 } })
	if _, err := p.Publish(context.Background(), in); !errors.Is(err, ErrQuote) {
		t.Fatalf("Publish with a stale quote: %v", err)
	}
	if p.Current() != first {
		t.Fatal("memory snapshot changed after a failed publish")
	}
	if after := snapshotDir(t, dir); !mapsEqual(before, after) {
		t.Fatal("disk changed after a failed publish")
	}
	// Invalid input fails before the agent is asked.
	q.set(func(u *unsignedQuoter) { u.mutate = nil })
	calls := q.calls.Load()
	in.Account = []byte(`{}`)
	if _, err := p.Publish(context.Background(), in); err == nil || q.calls.Load() != calls {
		t.Fatalf("invalid input: err %v, quoted %d times", err, q.calls.Load()-calls)
	}
}

// A restart keeps the history and continues the version numbers.
func TestPublisherRestart(t *testing.T) {
	dir := t.TempDir()
	pki := newTestPKI(t)
	in := testInput(t, pki)
	p := newPublisher(t, newUnsignedQuoter(t), dir)
	if _, err := p.Publish(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	// A leftover of a crash and a file of dstack-ingress's flat layout.
	os.Mkdir(filepath.Join(dir, ".v-9"), 0o755)
	os.WriteFile(filepath.Join(dir, "cert-old.example.com.pem"), []byte("stale"), 0o644)
	os.WriteFile(filepath.Join(dir, "unrelated.txt"), []byte("not ours"), 0o644)

	p2 := newPublisher(t, newUnsignedQuoter(t), dir)
	renewed, _ := pki.chain(t, "example.com")
	in.Certs["example.com"] = renewed
	b, err := p2.Publish(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(b.History()); n != 4 {
		t.Fatalf("history after restart has %d entries, want 4", n)
	}
	if target, _ := os.Readlink(filepath.Join(dir, ".current")); target != ".v-10" {
		t.Fatalf(".current -> %s, want .v-10", target)
	}
	got := topLevel(t, dir)
	if slices.Contains(got, "cert-old.example.com.pem") || slices.Contains(got, ".v-9") {
		t.Fatalf("stale entries kept: %q", got)
	}
	if !slices.Contains(got, "unrelated.txt") {
		t.Fatal("pruned a file that is not ours")
	}
	// A corrupt history is replaced, not fatal.
	os.Remove(filepath.Join(dir, HistoryFile))
	os.WriteFile(filepath.Join(dir, HistoryFile), []byte("garbage"), 0o644)
	p3 := newPublisher(t, newUnsignedQuoter(t), dir)
	if b, err := p3.Publish(context.Background(), in); err != nil || len(b.History()) != 3 {
		t.Fatalf("after corrupt history: %v", err)
	}
}

func TestPublisherMemoryOnly(t *testing.T) {
	p := newPublisher(t, newUnsignedQuoter(t), "")
	if _, err := p.Publish(context.Background(), testInput(t, newTestPKI(t))); err != nil {
		t.Fatal(err)
	}
	if p.Current() == nil {
		t.Fatal("no bundle")
	}
	if _, err := NewPublisher(PublisherConfig{}); err == nil || !strings.Contains(err.Error(), "Quoter") {
		t.Fatalf("no quoter: %v", err)
	}
}

func TestPublishDiskErrorKeepsPrevious(t *testing.T) {
	dir := t.TempDir()
	p := newPublisher(t, newUnsignedQuoter(t), dir)
	in := testInput(t, newTestPKI(t))
	first, err := p.Publish(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	// A non-empty directory where the cert.pem link must go: rename(2) fails.
	os.Remove(filepath.Join(dir, CertFile))
	if err := os.MkdirAll(filepath.Join(dir, CertFile, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Publish(context.Background(), in); err == nil {
		t.Fatal("Publish succeeded on a broken disk")
	}
	if p.Current() != first {
		t.Fatal("memory snapshot swapped although the disk write failed")
	}
	if target, _ := os.Readlink(filepath.Join(dir, ".current")); target != ".v-1" {
		t.Fatalf(".current -> %s after a failed write", target)
	}
	if _, err := os.Stat(filepath.Join(dir, ".v-2")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("half-written version left behind: %v", err)
	}
}

func snapshotDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(dir, path)
		if d.Type()&fs.ModeSymlink != 0 {
			l, _ := os.Readlink(path)
			out[rel] = "-> " + l
		} else if d.Type().IsRegular() {
			b, _ := os.ReadFile(path)
			out[rel] = string(b)
		}
		return nil
	})
	return out
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
