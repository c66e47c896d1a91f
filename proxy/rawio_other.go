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
