//go:build !plaincore

package proxy

// The one file of the core that reaches the fast path's packages: everything
// below proxy/internal is chosen here, and Config.PlainCore turns it off.
// TestFastPathImports keeps it that way.

import (
	"crypto/tls"
	"net"
	"syscall"

	"github.com/tee-ingress/tee-ingress/proxy/internal/epoll"
	"github.com/tee-ingress/tee-ingress/proxy/internal/h1fast"
	"github.com/tee-ingress/tee-ingress/proxy/internal/h2fast"
	"github.com/tee-ingress/tee-ingress/proxy/internal/rawio"
)

// rawIO is a socket driven by raw system calls (package rawio).
type rawIO = rawio.Conn

// watcher holds idle tcp-mode connections without goroutines (package epoll).
type watcher = epoll.Watcher

func newRawIO(c net.Conn) *rawIO { return rawio.New(c) }

func newWatcher() (*watcher, error) { return epoll.New() }

func rawRead(fd uintptr, p []byte) (int, syscall.Errno) { return rawio.Recv(fd, p) }

func unwrapRaw(err error) error { return rawio.UnwrapErr(err) }

// fastConfig is the limits both fast paths take from cfg (h2fast.Config
// has the same fields).
func fastConfig(cfg *Config) h1fast.Config {
	return h1fast.Config{
		MaxHeaderBytes:        cfg.MaxHeaderBytes,
		HeaderTimeout:         cfg.HeaderTimeout,
		ClientTimeout:         cfg.ClientTimeout,
		ServerTimeout:         cfg.ServerTimeout,
		KeepUnderscoreHeaders: cfg.KeepUnderscoreHeaders,
		AccessLog:             cfg.AccessLog,
	}
}

// fastH1 is the HTTP/1.1 fast path of http mode (package h1fast).
type fastH1 = h1fast.Engine

// newFastH1 is f's fast path (the plain-core build has none).
func newFastH1(f *httpFront) *fastH1 {
	st := &f.s.stats
	return h1fast.New(f.s.ctx, fastConfig(&f.s.cfg), fastHost{f}, f.s.log, h1fast.Counters{
		Fast: &st.h1Fast, Handoffs: &st.h1Handoffs, ToBackends: &st.toBackends,
		ToClients: &st.toClients, BackendErrors: &st.backendErrors,
	})
}

// serveH1 runs on the connection's goroutine until the connection ends or is
// handed to the http.Server.
func (f *httpFront) serveH1(c *trackedConn, tc *tls.Conn, st *tls.ConnectionState) {
	wd := int64(-1 << 62)
	timeout := f.s.cfg.ClientTimeout
	f.fast.Serve(h1fast.Client{
		TLS:  tc,
		Conn: c,
		Write: func(p []byte) error {
			_, err := c.writeTLS(tc, p, timeout, &wd)
			return err
		},
		CloseWrite: func() { c.closeWrite() },
		Handoff:    func(pending []byte) { f.handoff(c, tc, st, pending) },
		IP:         clientHost(c.RemoteAddr().String()),
	}, func(abort, kick func()) {
		f.s.mu.Lock()
		c.abort, c.kick = abort, kick
		f.s.mu.Unlock()
	})
}

// fastH2 is the HTTP/2 fast path of http mode (package h2fast).
type fastH2 = h2fast.Engine

func newFastH2(f *httpFront) *fastH2 {
	st := &f.s.stats
	return h2fast.New(f.s.ctx, h2fast.Config(fastConfig(&f.s.cfg)), fastH2Host{fastHost{f}}, f.s.log, h2fast.Counters{
		Streams: &st.h2Streams, ToBackends: &st.toBackends,
		ToClients: &st.toClients, BackendErrors: &st.backendErrors,
	})
}

// serveH2 runs on the connection's goroutine until the connection ends.
func (f *httpFront) serveH2(c *trackedConn, tc *tls.Conn, st *tls.ConnectionState) {
	wd := int64(-1 << 62)
	timeout := f.s.cfg.ClientTimeout
	addr := c.RemoteAddr().String()
	f.fast2.Serve(h2fast.Client{
		Read:  tc,
		Conn:  c,
		State: st,
		Write: func(p []byte) error {
			_, err := c.writeTLS(tc, p, timeout, &wd)
			return err
		},
		CloseWrite: func() {
			tc.CloseWrite()
			c.closeWrite()
		},
		IP:   clientHost(addr),
		Addr: addr,
	}, func(abort, kick func()) {
		f.s.mu.Lock()
		c.abort, c.kick = abort, kick
		f.s.mu.Unlock()
	})
}
