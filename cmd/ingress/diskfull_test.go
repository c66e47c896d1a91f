package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/internal/acmeca"
	"github.com/tee-ingress/tee-ingress/internal/cfemu"
)

// smallTmpfs mounts a tmpfs of size bytes on a new folder, or skips the
// test where mounting is not allowed (a container without CAP_SYS_ADMIN).
func smallTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s); the full-disk case needs one", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// fill writes a file in dir until the filesystem is full, then gives back
// leave bytes.
func fill(t *testing.T, dir string, leave int64) string {
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Errorf("creating the filler: %v", err)
		return path
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("filling %s: %v", dir, err)
			}
			if fi, err := f.Stat(); err == nil && leave > 0 {
				f.Truncate(max(fi.Size()-leave, 0))
			}
			return path
		}
	}
}

// TestStateDirFullAfterIssuance: STATE_DIR fills up while an order is under
// way (after the room check, before the certificate is stored). The CA is
// asked exactly once; the certificate is served and listed in history.json
// from memory; once there is room again it is written, and a restart then
// orders nothing.
func TestStateDirFullAfterIssuance(t *testing.T) {
	bin, _ := binaries(t)
	state := smallTmpfs(t, "2m")
	w := newWorld(t, acmeca.Options{})
	be := newBackend(t, "app")
	var once sync.Once
	var filler string
	w.cf.SetFault(func(r *http.Request) cfemu.Fault {
		if r.Method == http.MethodPost {
			b, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(b))
			if strings.Contains(string(b), "_acme-challenge") {
				once.Do(func() { filler = fill(t, state, 0) })
			}
		}
		return cfemu.Fault{}
	})
	evDir := t.TempDir()
	env := w.env(t.TempDir(), map[string]string{"TARGET_ENDPOINT": be.addr, "ACME_ACCOUNT_KEY": "file",
		"STATE_DIR": state, "EVIDENCE_DIR": evDir})
	p := startIngress(t, bin, env, "--listen", "127.0.0.1:0")
	addr := p.addr()
	p.waitLog(regexpMust(`msg="storing the new certificate failed; it is served from memory`), 60*time.Second)
	p.waitReady()
	if _, body := get(t, w.client(addr), "https://app.ingress.test/"); !strings.HasPrefix(body, "app ") {
		t.Fatalf("served: %q", body)
	}
	stored := filepath.Join(state, "tee-ingress")
	if m, _ := filepath.Glob(filepath.Join(stored, "*", "certs", "app.ingress.test.json")); len(m) != 0 {
		t.Fatalf("a certificate file exists on a full disk: %v", m)
	}
	pb := verifyEvidence(t, w, addr, "app.ingress.test")
	leaf := pb.Leaf(evidence.CertFileName("app.ingress.test"))
	sum := sha256.Sum256(leaf.Raw)
	if len(pb.History) != 1 || pb.History[0].SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("history.json: %+v, want the served certificate", pb.History)
	}
	if n := w.ca.Orders(); n != 1 {
		t.Fatalf("%d orders, want exactly 1", n)
	}

	// Room again: the write is retried and lands.
	os.Remove(filler)
	p.waitLog(regexpMust(`msg="stored the certificate held in memory"`), 30*time.Second)
	if m, _ := filepath.Glob(filepath.Join(stored, "*", "certs", "app.ingress.test.json")); len(m) != 1 {
		t.Fatalf("certificate file after the retry: %v", m)
	}
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	p2 := startIngress(t, bin, env, "--listen", "127.0.0.1:0")
	p2.waitReady()
	if n := w.ca.Orders(); n != 1 {
		t.Fatalf("%d orders after the restart, want still 1", n)
	}
	if c := p2.stop(); c != 0 {
		t.Fatalf("exit %d", c)
	}
}

// TestStateDirFullBeforeOrder: with no room in STATE_DIR nothing is
// ordered; the attempt fails naming STATE_DIR (and is retried after the
// usual backoff, a minute, which the test does not wait for).
func TestStateDirFullBeforeOrder(t *testing.T) {
	bin, _ := binaries(t)
	state := smallTmpfs(t, "1m")
	w := newWorld(t, acmeca.Options{})
	env := w.env(t.TempDir(), map[string]string{"ACME_ACCOUNT_KEY": "file", "STATE_DIR": state})
	// Room for the account's files (a few KiB), not for an order's margin.
	filler := fill(t, state, 32<<10)
	p := startIngress(t, bin, env, "--listen", "127.0.0.1:0")
	p.waitLog(regexpMust(`msg="certificate attempt failed.*state directory .* has no room`), 60*time.Second)
	if n := w.ca.Orders(); n != 0 {
		t.Fatalf("%d orders with a full STATE_DIR, want 0", n)
	}
	os.Remove(filler)
	if p.exited() {
		t.Fatalf("the process ended:\n%s", p.logs())
	}
}
