//go:build plaincore

package proxy

// Built with -tags plaincore, the proxy links none of the fast path's
// packages: these stand-ins report "not available" and everything runs on
// the standard-library core, as Config.PlainCore does at run time.
// TestFastPathImports builds it this way.

import (
	"crypto/tls"
	"errors"
	"net"
	"syscall"
)

type rawIO struct{}

func (*rawIO) Read([]byte) (int, error)            { return 0, syscall.ENOSYS }
func (*rawIO) Write([]byte) (int, error)           { return 0, syscall.ENOSYS }
func (*rawIO) RawConn() syscall.RawConn            { return nil }
func newRawIO(net.Conn) *rawIO                     { return nil }
func rawRead(uintptr, []byte) (int, syscall.Errno) { return 0, syscall.ENOSYS }
func unwrapRaw(err error) error                    { return err }

type watcher struct{}

func newWatcher() (*watcher, error)                          { return nil, errors.New("the plain core has no epoll watcher") }
func (*watcher) Add(syscall.RawConn, func()) (uint64, error) { return 0, errors.ErrUnsupported }
func (*watcher) Cancel(uint64) bool                          { return false }
func (*watcher) Close()                                      {}

type fastH1 struct{}

func newFastH1(*httpFront) *fastH1 { return nil }
func (*fastH1) Close()             {}
func (f *httpFront) serveH1(_ *trackedConn, tc *tls.Conn, _ *tls.ConnectionState) {
	f.deliver(tc)
}

type fastH2 struct{}

func newFastH2(*httpFront) *fastH2 { return nil }
func (*fastH2) Close()             {}
func (f *httpFront) serveH2(_ *trackedConn, tc *tls.Conn, _ *tls.ConnectionState) {
	f.deliver(tc)
}
