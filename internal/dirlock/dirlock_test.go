package dirlock

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestExclusive: a second Acquire on a held directory is a HeldError naming
// the holder's pid and the directory; after Release it succeeds.
func TestExclusive(t *testing.T) {
	dir := t.TempDir()
	l, err := Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(dir)
	var h *HeldError
	if !errors.As(err, &h) || h.PID != os.Getpid() || h.Dir != dir {
		t.Fatalf("second Acquire: %v, want a HeldError with pid %d", err, os.Getpid())
	}
	if !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), strconv.Itoa(os.Getpid())) {
		t.Errorf("error %q names neither the directory nor the pid", err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	l2, err := Acquire(dir)
	if err != nil {
		t.Fatalf("after Release: %v", err)
	}
	l2.Release()
	if fi, err := os.Stat(filepath.Join(dir, FileName)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("lock file: %v %v, want mode 0600", fi, err)
	}
}

// TestOtherProcess: a lock held by another process (flock from util-linux)
// is refused, and dropped when that process exits.
func TestOtherProcess(t *testing.T) {
	flock, err := exec.LookPath("flock")
	if err != nil {
		t.Skip("flock(1) not installed")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	if err := os.WriteFile(path, []byte("4242\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(flock, "-x", path, "cat") // holds the lock until stdin closes
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// flock(1) runs cat once it holds the lock: an echoed line says so.
	stdin.Write([]byte("x\n"))
	buf := make([]byte, 2)
	if _, err := out.Read(buf); err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(dir)
	var h *HeldError
	if !errors.As(err, &h) || h.PID != 4242 {
		t.Fatalf("Acquire while flock(1) holds it: %v", err)
	}
	stdin.Close()
	cmd.Wait()
	l, err := Acquire(dir)
	if err != nil {
		t.Fatalf("after the holder exited: %v", err)
	}
	l.Release()
}

func TestMissingDir(t *testing.T) {
	_, err := Acquire(filepath.Join(t.TempDir(), "nope"))
	if err == nil || IsHeld(err) {
		t.Fatalf("Acquire on a missing directory: %v", err)
	}
}
