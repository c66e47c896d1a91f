package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// smallBufSize is what a tcp-mode connection reads the client into until
	// traffic needs more: it holds a typical request, a batch of HTTP/2
	// frames and the evidence sniff without taking a pooled buffer. It is
	// allocated when the client first sends, so a connection that never does
	// costs nothing for it.
	smallBufSize = 2048
	// bufSize is one full TLS record of plaintext.
	bufSize = 16 << 10
	// backBufSize is what one read from a backend takes: four records, sent to
	// the client in one write (see writeClient).
	backBufSize = 4 * bufSize
	// wireBufSize holds backBufSize of plaintext as TLS records.
	wireBufSize = backBufSize + 4*64
)

var (
	bufPool     = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}
	backBufPool = sync.Pool{New: func() any { b := make([]byte, backBufSize); return &b }}
	wirePool    = sync.Pool{New: func() any { b := make([]byte, 0, wireBufSize); return &b }}
)

func getBuf() *[]byte      { return bufPool.Get().(*[]byte) }
func putBuf(b *[]byte)     { bufPool.Put(b) }
func getBackBuf() *[]byte  { return backBufPool.Get().(*[]byte) }
func putBackBuf(b *[]byte) { backBufPool.Put(b) }

// epoch anchors monotonic timestamps stored as int64 nanoseconds.
var epoch = time.Now()

func monotime() int64 { return int64(time.Since(epoch)) }

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// Who the stream belongs to, decided once per connection.
const (
	decUndecided uint32 = iota
	decBackend
	decEvidence
)

// tcpSession is one tcp-mode connection: the client (A, the goroutine that did
// the handshake, reads the client) and its backend (B, started at once, dials
// and reads the backend).
type tcpSession struct {
	s      *Server
	client *trackedConn
	tc     *tls.Conn
	state  *tls.ConnectionState
	target Target

	// Set by B before dialed is closed; mu orders them with abort.
	mu     sync.Mutex
	back   net.Conn
	raw    rawBackend // the fast path's hold on back, when it is plain TCP
	dialed chan struct{}
	ready  bool        // A has seen dialed closed (A only)
	noBack atomic.Bool // the dial failed
	// Each side's end of stream, to skip a half-close the final close makes
	// redundant.
	clientEOF, backEOF atomic.Bool
	aborted            bool // under mu

	decision atomic.Uint32
	handoff  chan struct{} // closed when the backend may write to the client after evidence
	closed   chan struct{} // closed by abort
	stopOnce sync.Once
	// refs counts the session's goroutines and its pending watches; the last
	// one to go closes everything.
	refs atomic.Int32

	// Under mu: sockets waited for by the Server's watcher (no goroutine
	// reads them until they become readable), and the idle timer that stands
	// in for the read deadlines meanwhile.
	watches [2]uint64
	timer   *time.Timer

	have int // bytes of x.small read before the client goroutine started

	lastActive atomic.Int64 // monotime of the last byte read from either side
	start      time.Time    // for the connection log

	// Write-deadline bookkeeping, each used by one goroutine at a time.
	clientWD, backWD int64

	small []byte // at least smallBufSize; the client goroutine's, allocated when it starts
}

// rawBackend is the fast path's side of a plain-TCP backend: raw writes,
// and reads through one callback allocated once per session (nil fields on
// the plain core, or for a TLS backend).
type rawBackend struct {
	conn syscall.RawConn
	io   *rawIO
	read func(fd uintptr) bool
	// What the last read callback got.
	buf *[]byte
	n   int
	err error
}

func (s *Server) serveTCP(c *trackedConn, tc *tls.Conn, st *tls.ConnectionState) {
	target, ok := s.router.match(st.ServerName)
	if !ok {
		s.stats.unrouted.Add(1)
		s.log.Info("no route for server name", "sni", st.ServerName, "remote", c.RemoteAddr().String())
		tc.Close()
		return
	}
	x := &tcpSession{
		s:        s,
		client:   c,
		tc:       tc,
		state:    st,
		target:   target,
		dialed:   make(chan struct{}),
		closed:   make(chan struct{}),
		clientWD: math.MinInt64 / 2,
		backWD:   math.MinInt64 / 2,
		start:    time.Now(),
	}
	x.raw.read = x.rawReadFn
	x.touch()
	c.SetReadDeadline(time.Now().Add(s.cfg.ClientTimeout))
	if s.cfg.Evidence == nil {
		x.decision.Store(decBackend)
	} else {
		x.handoff = make(chan struct{})
	}
	x.refs.Store(1) // this goroutine
	s.mu.Lock()
	c.abort = x.abort
	s.mu.Unlock()

	// The goroutines that read each side start when that side has something
	// to say; meanwhile the Server's watcher waits for the socket. They start
	// fresh, too: this goroutine's stack was grown by the handshake's crypto.
	if !x.pollClient() {
		x.refs.Add(1)
		x.goClient()
	}
	// Dial here, concurrently with the client goroutine (which serves
	// evidence without a backend, and waits for the dial before forwarding).
	if !x.dial() {
		x.dialFailed()
		x.release()
		return
	}
	if x.raw.conn == nil || !x.park(sideBackend) {
		x.refs.Add(1)
		x.goBackend()
	}
	x.release()
}

const (
	sideClient = iota
	sideBackend
)

// pollClient hands the client socket to the watcher unless the handshake left
// application data buffered in crypto/tls, which a readable socket would not
// announce. A read with an expired deadline returns what is buffered without
// touching the socket.
func (x *tcpSession) pollClient() bool {
	if x.s.watch == nil || x.client.raw == nil {
		return false
	}
	probe := getBuf()
	defer putBuf(probe)
	x.client.SetReadDeadline(time.Unix(1, 0))
	n, err := x.tc.Read(*probe)
	x.client.SetReadDeadline(time.Now().Add(x.s.cfg.ClientTimeout))
	if n > 0 || !isTimeout(err) {
		x.small = make([]byte, max(smallBufSize, n))
		x.have = copy(x.small, (*probe)[:n])
		return false
	}
	return x.park(sideClient)
}

// park registers a socket with the watcher; fired starts its goroutine. It
// reports false when the watcher cannot take it (start the goroutine now).
func (x *tcpSession) park(side int) bool {
	if x.s.watch == nil {
		return false
	}
	rc := x.raw.conn
	if side == sideClient {
		rc = x.client.raw.RawConn()
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.aborted {
		return true
	}
	x.refs.Add(1)
	id, err := x.s.watch.Add(rc, func() { x.fired(side) })
	if err != nil {
		x.refs.Add(-1)
		x.s.log.Debug("watching socket failed, using a goroutine", "err", err)
		return false
	}
	x.watches[side] = id
	x.armTimerLocked()
	return true
}

// fired runs on the watcher's goroutine when a parked socket is readable: the
// watch's reference passes to the goroutine started for that side.
func (x *tcpSession) fired(side int) {
	x.mu.Lock()
	if x.aborted || x.watches[side] == 0 {
		x.mu.Unlock()
		x.refs.Add(-1) // abort has closed everything already
		return
	}
	x.watches[side] = 0
	if x.watches[sideClient] == 0 && x.watches[sideBackend] == 0 && x.timer != nil {
		x.timer.Stop()
	}
	// Start while still holding mu: abort cannot have closed the client
	// connection, whose registration keeps the WaitGroup above zero.
	x.touch()
	if side == sideClient {
		x.goClient()
	} else {
		x.goBackend()
	}
	x.mu.Unlock()
}

// goClient and goBackend start a side's goroutine; the caller has taken the
// reference it releases.
func (x *tcpSession) goClient() {
	x.s.wg.Add(1)
	go func() {
		defer x.s.wg.Done()
		defer x.release()
		x.clientLoop()
	}()
}

func (x *tcpSession) goBackend() {
	x.s.wg.Add(1)
	go func() {
		defer x.s.wg.Done()
		defer x.release()
		x.backendLoop()
	}()
}

// parkTimeout is how long a session whose sockets are all with the watcher may
// stay idle: what the read deadlines would have allowed.
func (x *tcpSession) parkTimeout() time.Duration {
	if x.noBack.Load() {
		return x.s.cfg.HeaderTimeout
	}
	return min(x.s.cfg.ClientTimeout, x.s.cfg.ServerTimeout)
}

func (x *tcpSession) armTimerLocked() {
	d := x.parkTimeout() - time.Duration(monotime()-x.lastActive.Load())
	if x.timer == nil {
		x.timer = time.AfterFunc(d, x.idleCheck)
	} else {
		x.timer.Reset(d)
	}
}

// idleCheck runs on the timer's goroutine.
func (x *tcpSession) idleCheck() {
	x.mu.Lock()
	if x.aborted || x.watches[sideClient] == 0 && x.watches[sideBackend] == 0 {
		x.mu.Unlock()
		return
	}
	if idle := time.Duration(monotime() - x.lastActive.Load()); idle < x.parkTimeout() {
		x.timer.Reset(x.parkTimeout() - idle)
		x.mu.Unlock()
		return
	}
	// Counted like the session's goroutines, so that Shutdown waits for the
	// close below (legal here: the client connection is still registered).
	x.s.wg.Add(1)
	x.mu.Unlock()
	defer x.s.wg.Done()
	x.s.log.Debug("connection idle, closing", "remote", x.client.RemoteAddr().String())
	x.closeClean()
}

// dialFailed ends the session, unless the client may still ask for evidence.
func (x *tcpSession) dialFailed() {
	select {
	case <-x.closed:
		return
	default:
	}
	switch x.decision.Load() {
	case decBackend:
		x.closeClean()
	case decUndecided:
		// The client may still ask for evidence, which needs no backend;
		// give it HeaderTimeout to say so.
		x.touch()
		x.client.SetReadDeadline(time.Now().Add(x.s.cfg.HeaderTimeout))
		x.mu.Lock()
		if x.watches[sideClient] != 0 {
			x.armTimerLocked()
		}
		x.mu.Unlock()
	}
}

// release ends one of the session's goroutines; the last one closes everything.
func (x *tcpSession) release() {
	if x.refs.Add(-1) == 0 {
		x.abort()
	}
}

// abort closes both connections without ceremony; blocked reads and writes on
// either side return.
func (x *tcpSession) abort() {
	x.stopOnce.Do(func() {
		x.mu.Lock()
		x.aborted = true
		var dropped int32
		for i, id := range x.watches {
			if id != 0 && x.s.watch.Cancel(id) {
				dropped++
			}
			x.watches[i] = 0
		}
		if x.timer != nil {
			x.timer.Stop()
		}
		back := x.back
		x.mu.Unlock()
		close(x.closed)
		x.client.Close()
		if back != nil {
			back.Close()
		}
		// Watches that will never fire give back their references; the
		// count may reach zero here, and there is nothing more to close.
		x.refs.Add(-dropped)
		x.logClosed()
	})
}

// logClosed is tcp mode's connection log, at debug level.
func (x *tcpSession) logClosed() {
	if !x.s.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	to := "backend"
	switch {
	case x.noBack.Load():
		to = "backend unreachable"
	case x.decision.Load() == decEvidence:
		to = "evidence"
	case x.decision.Load() == decUndecided:
		to = "nothing (the client sent no request)"
	}
	x.s.log.Debug("connection closed", "client", x.client.RemoteAddr().String(), "sni", x.state.ServerName,
		"backend", x.target.Addr, "served_by", to, "duration", time.Since(x.start).Round(time.Millisecond))
}

// closeClean tells the client we are done (close_notify, then FIN) and ends the
// session.
func (x *tcpSession) closeClean() {
	x.closeClientWrite()
	x.abort()
}

func (x *tcpSession) closeClientWrite() {
	x.tc.CloseWrite()
	x.client.closeWrite()
}

func (x *tcpSession) touch() { x.lastActive.Store(monotime()) }

// extend pushes a read deadline that fired back when some byte moved on the
// session within timeout; it reports false when the session has been idle for
// timeout.
func (x *tcpSession) extend(timeout time.Duration, set func(time.Time) error) bool {
	idle := time.Duration(monotime() - x.lastActive.Load())
	if idle >= timeout || x.noBack.Load() {
		return false
	}
	return set(time.Now().Add(timeout-idle)) == nil
}

// claimBackend records that the stream belongs to the backend; it reports false
// when it already went to the evidence handler.
func (x *tcpSession) claimBackend() bool {
	return x.decision.CompareAndSwap(decUndecided, decBackend) || x.decision.Load() == decBackend
}

// clientLoop is goroutine A: sniff for evidence if configured, then forward
// client bytes to the backend.
func (x *tcpSession) clientLoop() {
	if x.small == nil {
		x.small = make([]byte, smallBufSize)
	}
	have := x.have
	if x.decision.Load() == decUndecided {
		for {
			var n int
			var err error
			if have == 0 || x.s.local.sniff(x.small[:have]) == sniffMore {
				n, err = x.readClient(x.small[have:])
				have += n
			}
			if have > 0 {
				switch x.s.local.sniff(x.small[:have]) {
				case sniffEvidence:
					if x.decision.CompareAndSwap(decUndecided, decEvidence) {
						x.serveEvidence(have)
						return
					}
				case sniffBackend:
					x.claimBackend()
				}
			}
			if err != nil {
				x.claimBackend()
				if have > 0 && x.writeBackend(x.small[:have]) != nil {
					x.abort()
					return
				}
				x.clientDone(err)
				return
			}
			if x.decision.Load() == decBackend {
				break
			}
		}
	}
	x.clientPump(x.small[:have])
}

// clientPump forwards pending, then the rest of the client stream, to the
// backend. It reads into the session's small buffer and takes a pooled buffer
// only while reads fill it, so an idle connection holds no pooled buffer.
func (x *tcpSession) clientPump(pending []byte) {
	if len(pending) > 0 && x.writeBackend(pending) != nil {
		x.abort()
		return
	}
	var big *[]byte
	defer func() {
		if big != nil {
			putBuf(big)
		}
	}()
	for {
		p := x.small
		if big != nil {
			p = *big
		}
		n, err := x.readClient(p)
		if n > 0 && x.writeBackend(p[:n]) != nil {
			x.abort()
			return
		}
		if big == nil && n == len(p) {
			big = getBuf()
		} else if big != nil && n < smallBufSize {
			putBuf(big)
			big = nil
		}
		if err != nil {
			x.clientDone(err)
			return
		}
	}
}

// clientDone handles the end of the client stream: EOF is passed on as a
// half-close, anything else ends the session.
func (x *tcpSession) clientDone(err error) {
	if err != io.EOF {
		x.s.log.Debug("client connection ended", "remote", x.client.RemoteAddr().String(), "err", err)
		if isTimeout(err) {
			x.closeClean()
		} else {
			x.abort()
		}
		return
	}
	if !x.waitDial() {
		x.abort()
		return
	}
	x.clientEOF.Store(true)
	if x.backEOF.Load() {
		return // both sides are done: the close that follows says it all
	}
	if cw, ok := x.back.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

func (x *tcpSession) readClient(p []byte) (int, error) {
	for {
		n, err := x.tc.Read(p)
		if n > 0 {
			x.touch()
			return n, err
		}
		if err != nil && isTimeout(err) && x.extend(x.s.cfg.ClientTimeout, x.client.SetReadDeadline) {
			continue
		}
		return n, err
	}
}

func (x *tcpSession) writeClient(p []byte) error {
	n, err := x.client.writeTLS(x.tc, p, x.s.cfg.ClientTimeout, &x.clientWD)
	x.s.stats.toClients.Add(uint64(n))
	return err
}

// waitDial waits for B's dial and reports whether the backend is there; when it
// is not, the client is closed cleanly.
func (x *tcpSession) waitDial() bool {
	if !x.ready {
		<-x.dialed
		x.ready = true
	}
	if x.back == nil {
		x.closeClean()
		return false
	}
	return true
}

func (x *tcpSession) writeBackend(p []byte) error {
	if !x.waitDial() {
		return net.ErrClosed
	}
	if now := monotime(); now-x.backWD > int64(x.s.cfg.ServerTimeout/16) {
		x.back.SetWriteDeadline(time.Now().Add(x.s.cfg.ServerTimeout))
		x.backWD = now
	}
	var n int
	var err error
	if x.raw.io != nil {
		n, err = x.raw.io.Write(p)
	} else {
		n, err = x.back.Write(p)
	}
	x.s.stats.toBackends.Add(uint64(n))
	return err
}

// backendLoop is goroutine B: forward what the backend sends to the client.
// The first thing the backend sends (or its close) claims the stream, so
// server-speaks-first protocols get their banner at once.
func (x *tcpSession) backendLoop() {
	first := true
	for {
		buf, n, err := x.readBackend()
		if first && (n > 0 || err != nil) {
			first = false
			if !x.claimBackend() {
				select {
				case <-x.handoff:
				case <-x.closed:
					if buf != nil {
						putBackBuf(buf)
					}
					return
				}
			}
		}
		if n > 0 {
			werr := x.writeClient((*buf)[:n])
			putBackBuf(buf)
			if werr != nil {
				x.abort()
				return
			}
		}
		if err != nil {
			if err == io.EOF {
				x.backEOF.Store(true)
				x.tc.CloseWrite() // close_notify
				if !x.clientEOF.Load() {
					x.client.closeWrite()
				}
				return
			}
			select {
			case <-x.closed:
			default:
				if isTimeout(err) {
					x.s.log.Debug("connection idle, closing", "backend", x.target.String(), "remote", x.client.RemoteAddr().String())
				} else {
					x.s.stats.backendErrors.Add(1)
					x.s.log.Info("backend connection failed", "backend", x.target.String(), "err", err)
				}
				x.closeClean()
			}
			return
		}
	}
}

// dial connects to the backend and sends the PROXY header. It reports false,
// leaving x.back nil, when that fails or the session ended meanwhile.
func (x *tcpSession) dial() bool {
	defer close(x.dialed)
	conn, err := x.s.dialer.DialContext(x.s.ctx, "tcp", x.target.Addr)
	if err == nil {
		err = x.prepareBackend(&conn)
		if err != nil {
			conn.Close()
		}
	}
	if err != nil {
		x.noBack.Store(true)
		x.s.stats.backendErrors.Add(1)
		x.s.log.Info("backend dial failed", "backend", x.target.String(), "sni", x.state.ServerName, "err", err)
		return false
	}
	conn.SetReadDeadline(time.Now().Add(x.s.cfg.ServerTimeout))
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.aborted {
		conn.Close()
		return false
	}
	if x.raw.io = x.s.rawIO(conn); x.raw.io != nil {
		x.raw.conn = x.raw.io.RawConn()
	}
	x.back = conn
	return true
}

// prepareBackend writes the PROXY header and, for https targets, wraps the
// connection in TLS.
func (x *tcpSession) prepareBackend(conn *net.Conn) error {
	if x.s.cfg.ProxyProtocol {
		hdr, err := proxyHeader(x.client.RemoteAddr(), x.client.LocalAddr(), x.state)
		if err != nil {
			return err
		}
		(*conn).SetWriteDeadline(time.Now().Add(x.s.cfg.ConnectTimeout))
		if _, err := (*conn).Write(hdr); err != nil {
			return err
		}
	}
	if x.target.Scheme == SchemeHTTPS {
		tc := tls.Client(*conn, x.s.backendTLSConfig(x.target))
		(*conn).SetDeadline(time.Now().Add(x.s.cfg.ConnectTimeout))
		if err := tc.Handshake(); err != nil {
			return err
		}
		(*conn).SetDeadline(time.Time{})
		*conn = tc
	}
	return nil
}

// readBackend returns the next bytes from the backend in a pooled buffer (nil
// when n is 0), extending the read deadline while the session is active.
func (x *tcpSession) readBackend() (*[]byte, int, error) {
	for {
		buf, n, err := x.readBackendOnce()
		if n > 0 {
			x.touch()
			return buf, n, nil
		}
		if err != nil && isTimeout(err) && x.extend(x.s.cfg.ServerTimeout, x.back.SetReadDeadline) {
			continue
		}
		return nil, 0, err
	}
}

func (x *tcpSession) readBackendOnce() (*[]byte, int, error) {
	if x.raw.conn == nil {
		buf := getBackBuf()
		n, err := x.back.Read(*buf)
		if n == 0 {
			putBackBuf(buf)
			return nil, 0, err
		}
		return buf, n, nil
	}
	// Wait for readability without holding a buffer: take one from the pool
	// only for the read attempt itself, as net.Conn.Read would make it.
	x.raw.buf, x.raw.n, x.raw.err = nil, 0, nil
	if err := x.raw.conn.Read(x.raw.read); err != nil {
		return nil, 0, unwrapRaw(err)
	}
	if x.raw.err != nil {
		return nil, 0, os.NewSyscallError("read", x.raw.err)
	}
	if x.raw.n == 0 {
		return nil, 0, io.EOF
	}
	return x.raw.buf, x.raw.n, nil
}

func (x *tcpSession) rawReadFn(fd uintptr) bool {
	b := getBackBuf()
	var n int
	var err syscall.Errno
	for {
		n, err = rawRead(fd, *b)
		if err != syscall.EINTR {
			break
		}
	}
	if err == syscall.EAGAIN {
		putBackBuf(b)
		return false
	}
	if err == 0 && n > 0 {
		x.raw.buf, x.raw.n = b, n
	} else {
		putBackBuf(b)
		if err != 0 {
			x.raw.err = err
		}
	}
	return true
}
