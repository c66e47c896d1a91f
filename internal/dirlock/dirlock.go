// Package dirlock keeps two processes from using one directory at once: an
// exclusive flock(2) on a lock file inside it, holding the owner's pid so
// that the one refused can say who holds it. The kernel drops the lock when
// its holder exits, however it exits, so a crash never leaves a stale lock.
package dirlock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// FileName is the lock file made in each locked directory. It is never
// removed: removing it would let a third process lock a new file while the
// second still waits on the old one.
const FileName = ".tee-ingress.lock"

// HeldError says the directory is locked by another process.
type HeldError struct {
	Dir string
	// PID is the holder's process id as it wrote it, 0 when unreadable.
	PID int
}

func (e *HeldError) Error() string {
	who := "another process"
	if e.PID > 0 {
		who = "process " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("%s is in use by %s (it holds %s)", e.Dir, who, filepath.Join(e.Dir, FileName))
}

// Lock is a held directory lock.
type Lock struct{ f *os.File }

// Acquire locks dir, which must exist, without waiting: a directory another
// process holds is a *HeldError at once.
func Acquire(dir string) (*Lock, error) {
	path := filepath.Join(dir, FileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the lock file: %w", err)
	}
	held, err := tryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	if held {
		b, _ := os.ReadFile(path)
		f.Close()
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return nil, &HeldError{Dir: dir, PID: pid}
	}
	if err := writePID(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	return &Lock{f: f}, nil
}

func writePID(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return err
}

// Release drops the lock. The file stays (see FileName).
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// IsHeld reports whether err says the directory is held by another process.
func IsHeld(err error) bool {
	var h *HeldError
	return errors.As(err, &h)
}
