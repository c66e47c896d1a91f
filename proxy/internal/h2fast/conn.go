package h2fast

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// conn is one client connection. The read loop (Serve's goroutine) owns
// the framer and the stream table's shape; everything the streams and the
// writer share with it is under mu.
type conn struct {
	e  *Engine
	c  Client
	fr *http2.Framer
	wg sync.WaitGroup // the writer and the streams

	mu           sync.Mutex
	wake         sync.Cond // the writer: frames queued, or done
	space        sync.Cond // the streams: window granted, queue drained, reset, done
	out          []byte
	writing      bool
	writerDone   bool
	done         bool // no more frames: the connection is ending
	failed       bool // ... and nothing more is written
	sentGoAway   bool
	streams      map[uint32]*stream
	maxClientID  uint32
	running      int  // stream goroutines not yet finished (reset ones included)
	idleSet      bool // the read deadline is the idle timeout
	sendWindow   int32
	initWindow   int32 // the client's SETTINGS_INITIAL_WINDOW_SIZE
	peerMaxFrame uint32
	recvWindow   int32     // what the client may still send on the connection
	ourResets    [8]uint32 // streams we reset lately
	nResets      int
	closedIDs    [16]uint32 // streams that ended lately
	nClosed      int
}

// Serve runs on the connection's goroutine until the connection ends;
// register receives the functions the proxy calls on shutdown (kick: send
// GOAWAY and end when the streams have; abort: end now).
func (e *Engine) Serve(cl Client, register func(abort, kick func())) {
	c := &conn{e: e, c: cl, streams: make(map[uint32]*stream),
		sendWindow: defaultWindow, initWindow: defaultWindow, peerMaxFrame: defaultMaxRecv, recvWindow: connWindow}
	c.wake.L, c.space.L = &c.mu, &c.mu
	register(c.abort, c.kick)
	c.wg.Add(1)
	go c.writeLoop()
	err := c.serve()
	c.mu.Lock()
	if err != nil && !c.done {
		c.e.log.Debug("http2 connection ended", "remote", cl.Addr, "err", err)
	}
	c.done = true
	c.wake.Signal()
	c.space.Broadcast()
	for _, s := range c.streams {
		s.abortLocked()
	}
	failed := c.failed
	c.mu.Unlock()
	c.wg.Wait()
	if !failed {
		c.linger()
	}
	cl.Conn.Close()
}

// linger says goodbye (TLS close_notify, then the TCP half-close) and reads
// what the client still sends for up to a second before the close: closing
// with unread bytes would reset the connection, and the client could lose
// the GOAWAY that says why.
func (c *conn) linger() {
	c.c.CloseWrite()
	c.c.Conn.SetReadDeadline(time.Now().Add(time.Second))
	io.CopyN(io.Discard, c.c.Conn, 1<<20)
}

func (c *conn) kick() { c.c.Conn.SetReadDeadline(time.Unix(1, 0)) }

func (c *conn) abort() {
	c.mu.Lock()
	c.failLocked()
	c.mu.Unlock()
}

// failLocked ends the connection at once: nothing more is written.
func (c *conn) failLocked() {
	c.done, c.failed = true, true
	c.out = c.out[:0]
	c.c.Conn.Close()
	c.wake.Signal()
	c.space.Broadcast()
}

// serve reads the preface and then frames until the connection ends. A
// connection error is answered with GOAWAY, written before the close.
func (c *conn) serve() error {
	c.c.Conn.SetReadDeadline(time.Now().Add(c.e.cfg.HeaderTimeout))
	br := bufio.NewReaderSize(c.c.Read, 16<<10)
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(br, preface[:]); err != nil || string(preface[:]) != http2.ClientPreface {
		return errors.New("no HTTP/2 client preface")
	}
	c.fr = http2.NewFramer(nil, br)
	c.fr.SetMaxReadFrameSize(maxFrame)
	c.fr.MaxHeaderListSize = uint32(c.e.cfg.MaxHeaderBytes)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(headerTable, nil)
	c.fr.ReadMetaHeaders.SetMaxStringLength(c.e.cfg.MaxHeaderBytes)
	c.fr.SetReuseFrames()
	c.sendSettings()
	for first := true; ; first = false {
		c.setReadDeadline()
		f, err := c.fr.ReadFrame()
		if err != nil {
			if done, err := c.readError(err); done {
				return err
			}
			continue
		}
		if _, ok := f.(*http2.SettingsFrame); first && !ok {
			return c.connError(http2.ErrCodeProtocol, "the first frame was not SETTINGS")
		}
		if err := c.process(f); err != nil {
			return err
		}
	}
}

func (c *conn) sendSettings() {
	var p []byte
	for _, s := range []http2.Setting{
		{ID: http2.SettingMaxConcurrentStreams, Val: maxStreams},
		{ID: http2.SettingMaxFrameSize, Val: maxFrame},
		{ID: http2.SettingHeaderTableSize, Val: headerTable},
		{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		{ID: http2.SettingMaxHeaderListSize, Val: uint32(c.e.cfg.MaxHeaderBytes)},
	} {
		p = binary.BigEndian.AppendUint16(p, uint16(s.ID))
		p = binary.BigEndian.AppendUint32(p, s.Val)
	}
	c.mu.Lock()
	c.queueLocked(http2.FrameSettings, 0, 0, p)
	c.mu.Unlock()
	c.windowUpdate(0, connWindow-defaultWindow)
}

// setReadDeadline arms the idle timeout while no stream runs, and takes it
// off while one does; once shutdown started it makes the read return at once
// until GOAWAY went out, and again when the last stream ended.
func (c *conn) setReadDeadline() {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.e.host.Quitting() && (!c.sentGoAway || c.running == 0):
		c.c.Conn.SetReadDeadline(time.Unix(1, 0)) // a kick that came before this read
		c.idleSet = true
	case c.running == 0:
		c.c.Conn.SetReadDeadline(time.Now().Add(c.e.cfg.ClientTimeout))
		c.idleSet = true
	case c.idleSet:
		c.c.Conn.SetReadDeadline(time.Time{})
		c.idleSet = false
	}
}

// readError decides what a failed read means: done reports that the
// connection ends (with err), else the loop goes on.
func (c *conn) readError(err error) (bool, error) {
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se):
		c.streamError(se.StreamID, se.Code)
		return false, nil
	case errors.As(err, &ce):
		return true, c.connError(http2.ErrCode(ce), "framing: "+err.Error())
	case errors.Is(err, http2.ErrFrameTooLarge):
		return true, c.connError(http2.ErrCodeFrameSize, "a frame larger than 16 KiB")
	case errors.Is(err, os.ErrDeadlineExceeded):
		return c.timeout()
	}
	return true, err
}

// timeout: the idle deadline passed, or the proxy kicked the connection
// because shutdown started. Either way GOAWAY; the connection ends once no
// stream runs.
func (c *conn) timeout() (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.goAwayLocked(http2.ErrCodeNo)
	if c.running == 0 {
		return true, nil
	}
	c.idleSet = false
	c.c.Conn.SetReadDeadline(time.Time{})
	return false, nil
}

// connError sends GOAWAY with code; the connection then ends.
func (c *conn) connError(code http2.ErrCode, why string) error {
	c.mu.Lock()
	c.goAwayLocked(code)
	c.mu.Unlock()
	return errors.New("http2: " + code.String() + ": " + why)
}

// streamError resets stream id; its work, if any, is abandoned.
func (c *conn) streamError(id uint32, code http2.ErrCode) {
	c.mu.Lock()
	c.streamErrorLocked(id, code)
	c.mu.Unlock()
}

func (c *conn) streamErrorLocked(id uint32, code http2.ErrCode) {
	if s := c.streams[id]; s != nil {
		s.abortLocked()
		c.forgetLocked(s)
		c.space.Broadcast() // its goroutine may wait for window or body
	}
	if id > c.maxClientID {
		c.maxClientID = id
	}
	c.ourResets[c.nResets%len(c.ourResets)] = id
	c.nResets++
	c.rstLocked(id, code)
}

// resetLocked: we reset stream id lately, so frames the client sent before
// it knew are dropped without another RST_STREAM.
func (c *conn) resetLocked(id uint32) bool {
	for _, r := range c.ourResets {
		if r == id {
			return true
		}
	}
	return false
}

// forgetLocked takes s out of the table: frames on it now find a closed
// stream. Its goroutine, if it still runs, counts in c.running until it ends.
func (c *conn) forgetLocked(s *stream) { delete(c.streams, s.id) }

func (c *conn) windowUpdateLocked(id uint32, n int32) {
	var p [4]byte
	binary.BigEndian.PutUint32(p[:], uint32(n))
	c.queueLocked(http2.FrameWindowUpdate, 0, id, p[:])
}
