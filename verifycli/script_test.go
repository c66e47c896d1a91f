package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/internal/agentsim"
)

var update = flag.Bool("update", false, "rewrite testdata/bundle, testdata/sim-root.pem and the golden report")

// TestScripts runs the CLI scripts in testdata/script: usage errors and the
// offline commands, asserting stdout, stderr and exit status.
//
// Besides testscript's commands they have:
//
//	exits N prog args...  run prog, which must exit with status N
//	flipquote FILE BYTE   flip the lowest bit of byte BYTE of the quote in a GetQuote JSON file
//
// and $TESTDATA (this package's testdata), $FIXTURES (evidence/testdata, the
// real Intel-signed quotes) and a copy of testdata/bundle in $WORK/bundle.
func TestScripts(t *testing.T) {
	td, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	fixtures, err := filepath.Abs("../evidence/testdata")
	if err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			env.Setenv("TESTDATA", td)
			env.Setenv("FIXTURES", fixtures)
			env.Setenv("NO_COLOR", "1")
			env.Setenv("GORACE", "atexit_sleep_ms=0") // no second of sleep at each exit under -race
			return copyDir(filepath.Join(td, "bundle"), filepath.Join(env.WorkDir, "bundle"))
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exits":     cmdExits,
			"flipquote": cmdFlipQuote,
		},
	})
}

func cmdExits(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exits N prog args...")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exits: %q is not a number", args[0])
	}
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		got = ee.ExitCode()
	case err != nil:
		ts.Fatalf("exits: %v", err)
	}
	if got != want {
		ts.Fatalf("%s exited with status %d, want %d", args[1], got, want)
	}
}

func cmdFlipQuote(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: flipquote FILE BYTE")
	}
	name := ts.MkAbs(args[0])
	off, err := strconv.Atoi(args[1])
	ts.Check(err)
	b, err := os.ReadFile(name)
	ts.Check(err)
	var m map[string]any
	ts.Check(json.Unmarshal(b, &m))
	q, err := hex.DecodeString(m["quote"].(string))
	ts.Check(err)
	if off < 0 || off >= len(q) {
		ts.Fatalf("flipquote: byte %d outside the %d-byte quote", off, len(q))
	}
	q[off] ^= 1
	m["quote"] = hex.EncodeToString(q)
	out, err := json.Marshal(m)
	ts.Check(err)
	ts.Check(os.WriteFile(name, out, 0o644))
}

func copyDir(from, to string) error {
	if err := os.MkdirAll(to, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// testdataSeed makes the committed bundle's simulator root reproducible.
var testdataSeed = []byte("verifycli testdata seed, v1.....")

// TestGenerateTestdata writes testdata/bundle (a bundle of the simulator
// with seed testdataSeed, certificates valid 2025 to 2049), its root and
// app-compose.json, and another chain for tampering. It runs with -update.
func TestGenerateTestdata(t *testing.T) {
	if !*update {
		t.Skip("run with -update to rewrite testdata")
	}
	sim, err := agentsim.New(agentsim.Config{Seed: testdataSeed, Stripped: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	from, to := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2049, 12, 31, 0, 0, 0, 0, time.UTC)
	ca := newTestCA(t, "testdata CA", from, to)
	cert := ca.issue(t, nil, from, to, testDomain)
	old := ca.issue(t, nil, from, from.Add(90*24*time.Hour), testDomain)
	other := ca.issue(t, nil, from, to, testDomain)
	b, err := evidence.BuildBundle(context.Background(), simQuoter{sim}, evidence.BundleInput{
		Account: accountJSON(testAccountURI),
		Primary: testDomain,
		Certs:   map[string][]byte{testDomain: cert.chainPEM},
		History: []evidence.HistoryEntry{evidence.NewHistoryEntry(old.leaf)},
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("testdata", "bundle")
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, f := range b.Files() {
		writeFile(t, dir, name, f)
	}
	writeFile(t, "testdata", "sim-root.pem", sim.RootPEM())
	writeFile(t, "testdata", "app-compose.json", sim.ComposeJSON())
	writeFile(t, "testdata", "other-chain.pem", other.chainPEM)
	writeFile(t, "testdata", "ca-root.pem", ca.rootPEM())
}

// simQuoter quotes with the simulator directly.
type simQuoter struct{ s *agentsim.Simulator }

var _ evidence.Quoter = simQuoter{}

func (q simQuoter) Quote(_ context.Context, rd [64]byte) (*evidence.Quote, error) {
	raw, err := q.s.QuoteFor(rd)
	if err != nil {
		return nil, err
	}
	return evidence.ParseQuoteJSON(raw)
}

// TestJSONGolden pins the --json schema: the report of the committed bundle
// must stay byte for byte the golden file, checked_at and the wording of
// details and hints aside. Fields may be added (update the golden file with
// -update); none may change or go.
func TestJSONGolden(t *testing.T) {
	r := runCLI(t, "bundle", "testdata/bundle", "--json", "--tdx-root", "testdata/sim-root.pem", "--compose", "testdata/app-compose.json")
	if r.code != 0 {
		t.Fatalf("exit %d:\n%s", r.code, r.dump())
	}
	if !json.Valid([]byte(r.stdout)) {
		t.Fatalf("not valid JSON:\n%s", r.stdout)
	}
	if r.report.CheckedAt.IsZero() || time.Since(r.report.CheckedAt) > time.Hour {
		t.Errorf("checked_at %s is not now", r.report.CheckedAt)
	}
	// The schema and the values are pinned; the wording of details and
	// hints (package evidence's, mostly) is not.
	got := regexp.MustCompile(`"checked_at": "[^"]*"`).ReplaceAll([]byte(r.stdout), []byte(`"checked_at": "2025-01-01T00:00:00Z"`))
	got = regexp.MustCompile(`"(detail|hint)": "(?:[^"\\]|\\.)+"`).ReplaceAll(got, []byte(`"$1": "<text>"`))
	golden := filepath.Join("testdata", "bundle-report.golden.json")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("the report differs from %s (run with -update if a field was added):\n%s", golden, got)
	}
}
