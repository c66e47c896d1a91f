package main

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"github.com/tee-ingress/tee-ingress/internal/syncbuf"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Dstack-TEE/dstack/sdk/go/dstack"
	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/verify"
)

func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "dsim")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func TestRunServesUntilCancelled(t *testing.T) {
	dir := shortDir(t)
	sock := filepath.Join(dir, "dstack.sock")
	compose := filepath.Join(dir, "app-compose.json")
	if err := os.WriteFile(compose, []byte(`{"name":"from-file","runner":"docker-compose"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncbuf.Buffer
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"--socket", sock, "--stripped", "--compose", compose, "--seed", "dev"}, &stdout, &stderr)
	}()
	waitFor(t, "the export line", func() bool { return strings.HasSuffix(stdout.String(), "\n") })

	line := stdout.String()
	root := filepath.Join(dir, "dstack-sim-root.pem")
	want := "export DSTACK_SIMULATOR_ENDPOINT=" + sock + "  # simulator root CA: " + root + " (NOT a TEE: quotes prove nothing)\n"
	if line != want {
		t.Errorf("stdout = %q, want %q", line, want)
	}
	rootPEM, err := os.ReadFile(root)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(rootPEM) {
		t.Fatal("root file holds no certificate")
	}

	c := dstack.NewDstackClient(dstack.WithEndpoint(sock), dstack.WithLogger(slog.New(slog.DiscardHandler)))
	q, err := c.GetQuote(ctx, []byte("hello"))
	if err != nil {
		t.Fatalf("GetQuote: %v", err)
	}
	raw, err := hex.DecodeString(q.Quote)
	if err != nil {
		t.Fatal(err)
	}
	p, err := abi.QuoteToProto(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := verify.TdxQuote(p, &verify.Options{TrustedRoots: pool}); err != nil {
		t.Errorf("quote does not verify under the written root: %v", err)
	}
	info, err := c.Info(ctx)
	if err != nil || info.AppName != "from-file" {
		t.Errorf("Info: app_name %q (%v), want the --compose file's", info.AppName, err)
	}
	if !strings.Contains(q.EventLog, `"digest":"","event":"app-id"`) {
		t.Error("--stripped: runtime events still carry digests")
	}

	cancel()
	select {
	case code := <-exit:
		if code != 0 {
			t.Errorf("exit status %d, stderr:\n%s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after cancellation")
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
	if strings.Contains(stdout.String(), "level=") {
		t.Error("logs went to stdout")
	}
	if !strings.Contains(stderr.String(), "app_id=") {
		t.Errorf("stderr lacks the app identity log:\n%s", stderr.String())
	}

	// Same seed, same root key: a saved root keeps working across restarts.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	var out2 syncbuf.Buffer
	go func() {
		exit <- run(ctx2, []string{"--socket", sock, "--seed", "dev", "--root-out", filepath.Join(dir, "again.pem")}, &out2, &stderr)
	}()
	waitFor(t, "the second export line", func() bool { return strings.HasSuffix(out2.String(), "\n") })
	c2 := dstack.NewDstackClient(dstack.WithEndpoint(sock), dstack.WithLogger(slog.New(slog.DiscardHandler)))
	q2, err := c2.GetQuote(ctx2, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw2, _ := hex.DecodeString(q2.Quote)
	p2, err := abi.QuoteToProto(raw2)
	if err != nil {
		t.Fatal(err)
	}
	if err := verify.TdxQuote(p2, &verify.Options{TrustedRoots: pool}); err != nil {
		t.Errorf("restart with the same --seed: quote does not verify under the first run's root: %v", err)
	}
	cancel2()
	if code := <-exit; code != 0 {
		t.Errorf("second run: exit status %d", code)
	}
}

func TestRunErrors(t *testing.T) {
	dir := shortDir(t)
	notJSON := filepath.Join(dir, "compose.yaml")
	if err := os.WriteFile(notJSON, []byte("services: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"no socket", nil, 1, []string{"dstack-sim: error: --socket is required", "hint: dstack-sim --socket"}},
		{"unknown flag", []string{"--sock", "x"}, 2, []string{"dstack-sim: error: flag provided but not defined: -sock", "Usage:"}},
		{"stray argument", []string{"--socket", filepath.Join(dir, "s"), "extra"}, 1, []string{`unexpected argument "extra"`}},
		{"missing compose", []string{"--socket", filepath.Join(dir, "s"), "--compose", filepath.Join(dir, "nope.json")}, 1, []string{"reading --compose"}},
		{"compose not JSON", []string{"--socket", filepath.Join(dir, "s"), "--compose", notJSON}, 1, []string{"Config.ComposeJSON is not a JSON object", "hint: --compose must name an app-compose.json"}},
		{"socket is a file", []string{"--socket", notJSON}, 1, []string{"is not a socket", "hint: pass another --socket"}},
	} {
		var stdout, stderr syncbuf.Buffer
		code := run(context.Background(), tc.args, &stdout, &stderr)
		if code != tc.code {
			t.Errorf("%s: exit %d, want %d; stderr:\n%s", tc.name, code, tc.code, stderr.String())
		}
		for _, w := range tc.want {
			if !strings.Contains(stderr.String(), w) {
				t.Errorf("%s: stderr lacks %q:\n%s", tc.name, w, stderr.String())
			}
		}
		if stdout.String() != "" {
			t.Errorf("%s: stdout = %q, want nothing", tc.name, stdout.String())
		}
	}
	var stdout, stderr syncbuf.Buffer
	if code := run(context.Background(), []string{"--help"}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "Example:") {
		t.Errorf("--help: exit %d, stdout %q", code, stdout.String())
	}
}
