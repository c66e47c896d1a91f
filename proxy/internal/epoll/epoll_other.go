//go:build !linux

package epoll

import (
	"errors"
	"syscall"
)

// Watcher is Linux-only; elsewhere every connection keeps its goroutines.
type Watcher struct{}

// New fails here: no epoll.
func New() (*Watcher, error) { return nil, errors.New("no epoll on this platform") }

// Add fails here.
func (w *Watcher) Add(syscall.RawConn, func()) (uint64, error) {
	return 0, errors.New("no epoll on this platform")
}

// Cancel reports false here.
func (w *Watcher) Cancel(uint64) bool { return false }

// Close does nothing here.
func (w *Watcher) Close() {}
