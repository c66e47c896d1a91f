//go:build linux

package rawio

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// Conn reads and writes a TCP socket with raw, non-blocking system calls,
// waiting for readiness through the runtime's poller (syscall.RawConn), so
// deadlines and Close behave as for net.Conn.
//
// Why: net.Conn enters every read and write through the scheduler's syscall
// path. With one CPU (the benchmark's pinning, and small TEE VMs) the
// runtime's monitor thread then wakes every 20 µs to take the processor back
// from a write that is still in the kernel, handing it to another thread, and
// the CPU spends a tenth of its time switching threads. These sockets are
// non-blocking, so their calls return in microseconds and need no hand-off.
type Conn struct {
	rc syscall.RawConn

	// net.Conn allows concurrent calls (net/http's Transport writes a request
	// from its writeLoop while a protocol-switch copier may already write to
	// the same socket), so each side's state is held under its own lock.
	rmu  sync.Mutex
	rp   []byte
	rn   int
	rerr syscall.Errno
	rfn  func(fd uintptr) bool
	wmu  sync.Mutex
	wp   []byte
	wn   int
	werr syscall.Errno
	wfn  func(fd uintptr) bool
}

// New returns nil when c is not a socket we can drive this way.
func New(c net.Conn) *Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &Conn{rc: rc}
	r.rfn = r.readFn
	r.wfn = r.writeFn
	return r
}

// RawConn is the socket's syscall.RawConn (for the epoll watcher and raw
// reads of its owner).
func (r *Conn) RawConn() syscall.RawConn { return r.rc }

func (r *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rmu.Lock()
	r.rp, r.rn, r.rerr = p, 0, 0
	err := r.rc.Read(r.rfn)
	n, rerr := r.rn, r.rerr
	r.rp = nil
	r.rmu.Unlock()
	if err != nil {
		return 0, UnwrapErr(err)
	}
	if rerr != 0 {
		return 0, os.NewSyscallError("read", rerr)
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

func (r *Conn) readFn(fd uintptr) bool {
	for {
		n, e := Recv(fd, r.rp)
		switch e {
		case 0:
			r.rn = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			r.rerr = e
			return true
		}
	}
}

func (r *Conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.wmu.Lock()
	r.wp, r.wn, r.werr = p, 0, 0
	err := r.rc.Write(r.wfn)
	n, werr := r.wn, r.werr
	r.wp = nil
	r.wmu.Unlock()
	if err != nil {
		return n, UnwrapErr(err)
	}
	if werr != 0 {
		return n, os.NewSyscallError("write", werr)
	}
	return n, nil
}

func (r *Conn) writeFn(fd uintptr) bool {
	for r.wn < len(r.wp) {
		n, e := rawWrite(fd, r.wp[r.wn:])
		switch e {
		case 0:
			r.wn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			r.werr = e
			return true
		}
	}
	return true
}

// Recv is recv(2) without the scheduler's syscall bookkeeping; recvfrom
// and sendto skip the file layer that read and write go through.
func Recv(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), 0, 0, 0)
	return int(n), e
}

// rawWrite is send(2); MSG_NOSIGNAL: a peer that went away is an EPIPE error,
// not a signal.
func rawWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), syscall.MSG_NOSIGNAL|syscall.MSG_DONTWAIT, 0, 0)
	return int(n), e
}

// UnwrapErr turns RawConn's "raw-read"/"raw-write" OpError into the error a
// net.Conn would give, keeping deadline and closed-connection errors
// recognisable (errors.Is with os.ErrDeadlineExceeded and net.ErrClosed still
// hold on the result).
func UnwrapErr(err error) error {
	if oe, ok := err.(*net.OpError); ok {
		switch oe.Op {
		case "raw-read":
			oe.Op = "read"
		case "raw-write":
			oe.Op = "write"
		}
	}
	return err
}

// IdleCheck tells whether nothing is waiting to be read on a pooled backend
// connection: no byte and no end of stream. A connection is reused only when
// it is silent, so bytes a backend sent after a complete response (a HEAD
// answer with a body, a second unasked response) never reach the next client
// as its answer. One recv(2) with MSG_PEEK|MSG_DONTWAIT: nothing is consumed.
// It is made once per connection so that the check allocates nothing; one
// goroutine at a time (the pool's taker) uses it.
type IdleCheck struct {
	raw   syscall.RawConn
	quiet bool
	b     [1]byte
	fn    func(fd uintptr)
}

// NewIdleCheck returns nil when c is not a socket it can look at; such a
// connection is never silent. A wrapper with a NetConn method (as the proxy's
// raw-I/O connection has) is looked through.
func NewIdleCheck(c net.Conn) *IdleCheck {
	if w, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = w.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	k := &IdleCheck{raw: raw}
	k.fn = k.peek
	return k
}

func (k *IdleCheck) peek(fd uintptr) {
	for {
		_, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&k.b[0])), 1, syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		if e != syscall.EINTR {
			k.quiet = e == syscall.EAGAIN
			return
		}
	}
}

// Silent reports whether nothing waits to be read on the connection (false
// for a nil check).
func (k *IdleCheck) Silent() bool {
	if k == nil {
		return false
	}
	k.quiet = false
	return k.raw.Control(k.fn) == nil && k.quiet
}
