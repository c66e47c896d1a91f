//go:build !linux

package proxy

import (
	"errors"
	"syscall"
)

// watcher is Linux-only; elsewhere every connection keeps its goroutines.
type watcher struct{}

func newWatcher() (*watcher, error) { return nil, errors.New("no epoll on this platform") }

func (w *watcher) add(syscall.RawConn, func()) (uint64, error) {
	return 0, errors.New("no epoll on this platform")
}

func (w *watcher) cancel(uint64) bool { return false }

func (w *watcher) close() {}
