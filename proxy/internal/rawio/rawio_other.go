//go:build !linux

package rawio

import (
	"net"
	"syscall"
)

// Conn is Linux-only; elsewhere sockets go through net.Conn.
type Conn struct{ rc syscall.RawConn }

// New returns nil: no raw I/O on this platform.
func New(net.Conn) *Conn { return nil }

func (r *Conn) Read([]byte) (int, error)  { return 0, syscall.ENOSYS }
func (r *Conn) Write([]byte) (int, error) { return 0, syscall.ENOSYS }

// RawConn is nil here.
func (r *Conn) RawConn() syscall.RawConn { return r.rc }

// Recv is not available here.
func Recv(uintptr, []byte) (int, syscall.Errno) { return 0, syscall.ENOSYS }

// UnwrapErr returns err.
func UnwrapErr(err error) error { return err }

// IdleCheck cannot look at a socket without reading it here, so no pooled
// backend connection is trusted for reuse (see the Linux version).
type IdleCheck struct{}

// NewIdleCheck returns nil here.
func NewIdleCheck(net.Conn) *IdleCheck { return nil }

// Silent is false here.
func (*IdleCheck) Silent() bool { return false }
