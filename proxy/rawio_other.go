//go:build !linux

package proxy

import (
	"net"
	"syscall"
)

// rawIO is Linux-only; elsewhere sockets go through net.Conn.
type rawIO struct{ rc syscall.RawConn }

func newRawIO(net.Conn) *rawIO { return nil }

func (r *rawIO) Read([]byte) (int, error)  { return 0, syscall.ENOSYS }
func (r *rawIO) Write([]byte) (int, error) { return 0, syscall.ENOSYS }

func rawRead(uintptr, []byte) (int, syscall.Errno) { return 0, syscall.ENOSYS }

func unwrapRaw(err error) error { return err }

// idleCheck cannot look at a socket without reading it here, so no pooled
// backend connection is trusted for reuse (see the Linux version).
type idleCheck struct{}

func newIdleCheck(net.Conn) *idleCheck { return nil }

func (*idleCheck) silent() bool { return false }
