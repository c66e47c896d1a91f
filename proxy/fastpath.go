//go:build !plaincore

package proxy

// The one file of the core that reaches the fast path's packages: everything
// below proxy/internal is chosen here, and Config.PlainCore turns it off.
// TestFastPathImports keeps it that way.

import (
	"net"
	"syscall"

	"github.com/tee-ingress/tee-ingress/proxy/internal/epoll"
	"github.com/tee-ingress/tee-ingress/proxy/internal/rawio"
)

// rawIO is a socket driven by raw system calls (package rawio).
type rawIO = rawio.Conn

// watcher holds idle tcp-mode connections without goroutines (package epoll).
type watcher = epoll.Watcher

// idleCheck tells whether a pooled backend connection is silent.
type idleCheck = rawio.IdleCheck

func newRawIO(c net.Conn) *rawIO { return rawio.New(c) }

func newWatcher() (*watcher, error) { return epoll.New() }

// newIdleCheck looks at the socket under a rawConn wrapper.
func newIdleCheck(c net.Conn) *idleCheck {
	if rc, isRaw := c.(*rawConn); isRaw {
		c = rc.Conn
	}
	return rawio.NewIdleCheck(c)
}

func rawRead(fd uintptr, p []byte) (int, syscall.Errno) { return rawio.Recv(fd, p) }

func unwrapRaw(err error) error { return rawio.UnwrapErr(err) }
