package repocheck

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"errors"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// root is the module root: the nearest parent holding go.mod.
func root(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}

// TestEveryPackageHasOnePackageComment: a reader starts at the package
// comment, so it must exist, and only once, or godoc concatenates them.
func TestEveryPackageHasOnePackageComment(t *testing.T) {
	top := root(t)
	docs := map[string][]string{} // dir -> files with a package comment
	seen := map[string]bool{}
	err := filepath.WalkDir(top, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != top && (strings.HasPrefix(name, ".") || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		dir := filepath.Dir(path)
		seen[dir] = true
		if f.Doc != nil && strings.TrimSpace(f.Doc.Text()) != "" {
			docs[dir] = append(docs[dir], filepath.Base(path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) < 8 {
		t.Fatalf("found only %d packages under %s", len(seen), top)
	}
	for dir := range seen {
		rel, _ := filepath.Rel(top, dir)
		switch n := len(docs[dir]); {
		case n == 0:
			t.Errorf("package %s has no package comment: add a doc.go saying what it is for and where a reader starts", rel)
		case n > 1:
			t.Errorf("package %s has package comments in %d files %v: keep one (doc.go)", rel, n, docs[dir])
		}
	}
}

var fromLine = regexp.MustCompile(`(?m)^FROM\s+(\S+)`)

// TestDockerfilePinsBaseImagesByDigest: a tag can be moved under us; a digest
// cannot, and the image is what the TEE measures.
func TestDockerfilePinsBaseImagesByDigest(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(root(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	froms := fromLine.FindAllStringSubmatch(string(data), -1)
	if len(froms) < 2 {
		t.Fatalf("Dockerfile has %d FROM lines, want a build and a final stage", len(froms))
	}
	pinned := regexp.MustCompile(`@sha256:[0-9a-f]{64}$`)
	for _, m := range froms {
		if !pinned.MatchString(m[1]) {
			t.Errorf("base image %s is not pinned by digest (want image:tag@sha256:<64 hex>)", m[1])
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-buildvcs=false", "-buildid=", "-tags nodev", "./cmd/ingress", "./verifycli"} {
		if !bytes.Contains(data, []byte(want)) {
			t.Errorf("Dockerfile build lacks %q", want)
		}
	}
}

// TestBuildIsReproducibleAndStatic builds the ingress as the Dockerfile does,
// from the repository and from a copy at another path, and requires the same
// bytes, a static binary (no ELF interpreter), and no --dev in it.
func TestBuildIsReproducibleAndStatic(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary twice")
	}
	top := root(t)
	cp := filepath.Join(t.TempDir(), "elsewhere")
	// Every source file as it is in the work tree (tracked or not), so the
	// two builds see the same code at different paths.
	err := filepath.WalkDir(top, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(top, path)
		if d.IsDir() {
			if rel != "." && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(cp, rel), 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(cp, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	build := func(src, dst string) [32]byte {
		cmd := exec.Command("go", "build", "-tags", "nodev", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=", "-o", dst, "./cmd/ingress")
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build in %s: %v\n%s", src, err, out)
		}
		data, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(data)
	}
	bin := filepath.Join(t.TempDir(), "ingress")
	a := build(top, bin)
	b := build(cp, filepath.Join(t.TempDir(), "ingress"))
	if a != b {
		t.Fatalf("two builds of the same source differ: %x vs %x", a, b)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("ingress binary is dynamically linked (has PT_INTERP)")
		}
	}
	t.Logf("ingress binary sha256 %x", a)

	// The image's build has no --dev, and says how to get it.
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "--dev")
	cmd.Stderr = &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(stderr.String(), "--dev is not in this build") {
		t.Fatalf("production build with --dev: %v, stderr %q; want exit 2 naming the nodev build", err, stderr.String())
	}
}

// TestComposeExamplesMountWhatDstackNeeds: the guest agent's socket, the
// cert-data volume dstack-ingress users already have, and the evidence volume.
func TestComposeExamplesMountWhatDstackNeeds(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(root(t), "examples", "*.yaml"))
	if len(files) < 3 {
		t.Fatalf("want single-domain, multi-domain and wildcard examples, found %v", files)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"/var/run/dstack.sock:/var/run/dstack.sock", "cert-data:/etc/letsencrypt", "evidences:/evidences", "DOMAIN:", "TARGET_ENDPOINT:"} {
			if !bytes.Contains(data, []byte(want)) {
				t.Errorf("%s lacks %q", filepath.Base(f), want)
			}
		}
		if bytes.Contains(data, []byte("\t")) {
			t.Errorf("%s contains a tab: YAML forbids tabs in indentation", filepath.Base(f))
		}
	}
}

// verifycliDepsHeader heads verifycli/deps.txt.
const verifycliDepsHeader = `# Modules other than this one that verifycli links (go list -deps, by module):
# every one is code an auditor's verifier runs, so the list stays short (at
# most maxVerifierModules) and the verifier imports nothing of the TEE side
# (guest-agent client, DNS providers, lego). A change here is reviewed, then
#   UPDATE_DEPS=1 go test -run TestVerifierDeps ./internal/repocheck
`

// maxVerifierModules bounds verifycli's third-party modules.
const maxVerifierModules = 12

// TestVerifierDeps fails when the modules verifycli links change, or grow
// past maxVerifierModules.
func TestVerifierDeps(t *testing.T) {
	dir := root(t)
	cmd := exec.Command("go", "list", "-deps", "-f", "{{with .Module}}{{.Path}}{{end}}", "./verifycli")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var got []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" && l != "github.com/tee-ingress/tee-ingress" && !slices.Contains(got, l) {
			got = append(got, l)
		}
	}
	slices.Sort(got)
	if len(got) > maxVerifierModules {
		t.Errorf("verifycli links %d modules, at most %d: %s", len(got), maxVerifierModules, strings.Join(got, ", "))
	}
	path := filepath.Join(dir, "verifycli", "deps.txt")
	if os.Getenv("UPDATE_DEPS") != "" {
		if err := os.WriteFile(path, []byte(verifycliDepsHeader+strings.Join(got, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v: create it with UPDATE_DEPS=1 go test -run TestVerifierDeps ./internal/repocheck", err)
	}
	var want []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			want = append(want, l)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("verifycli's modules changed (verifycli/deps.txt):\n got %s\nwant %s\nreview them, then run UPDATE_DEPS=1 go test -run TestVerifierDeps ./internal/repocheck",
			strings.Join(got, ", "), strings.Join(want, ", "))
	}
}
