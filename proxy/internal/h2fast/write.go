package h2fast

import (
	"encoding/binary"
	"errors"

	"golang.org/x/net/http2"
)

// The writing side of a connection. Frames are appended to c.out under c.mu
// by whoever makes them (the read loop for control frames, the streams for
// their responses); the writer goroutine takes everything queued and writes
// it in one call, so frames that were made while it wrote go out together.

var errConnDone = errors.New("the client connection ended")

// writeLoop runs on a goroutine of its own until the connection is done and
// everything queued before that was written (or a write failed).
func (c *conn) writeLoop() {
	defer c.wg.Done()
	var buf []byte
	c.mu.Lock()
	for {
		for len(c.out) == 0 && !c.done {
			c.wake.Wait()
		}
		if len(c.out) == 0 {
			break
		}
		buf, c.out = c.out, buf[:0]
		c.writing = true
		c.mu.Unlock()
		err := c.c.Write(buf)
		c.mu.Lock()
		c.writing = false
		c.space.Broadcast()
		if err != nil {
			c.failLocked()
			break
		}
		if cap(buf) > 4*highWater {
			buf = nil // a burst's buffer is not kept for the connection's life
		}
	}
	c.writerDone = true
	c.space.Broadcast()
	c.mu.Unlock()
}

// frameHeader appends a frame header for a payload of n bytes.
func frameHeader(b []byte, n int, t http2.FrameType, flags http2.Flags, id uint32) []byte {
	return append(b, byte(n>>16), byte(n>>8), byte(n), byte(t), byte(flags),
		byte(id>>24)&0x7f, byte(id>>16), byte(id>>8), byte(id))
}

// queueLocked appends a control frame; a client that makes them faster than
// it reads them loses the connection. c.mu is held.
func (c *conn) queueLocked(t http2.FrameType, flags http2.Flags, id uint32, payload []byte) {
	if c.done {
		return
	}
	if len(c.out) > maxQueued {
		c.e.log.Debug("http2: control frames queued past the limit; closing", "remote", c.c.Addr)
		c.failLocked()
		return
	}
	c.out = frameHeader(c.out, len(payload), t, flags, id)
	c.out = append(c.out, payload...)
	c.wake.Signal()
}

func (c *conn) queue(t http2.FrameType, flags http2.Flags, id uint32, payload []byte) {
	c.mu.Lock()
	c.queueLocked(t, flags, id, payload)
	c.mu.Unlock()
}

func (c *conn) windowUpdate(id uint32, n int32) {
	c.mu.Lock()
	c.windowUpdateLocked(id, n)
	c.mu.Unlock()
}

// rstLocked resets stream id with code; c.mu is held.
func (c *conn) rstLocked(id uint32, code http2.ErrCode) {
	var p [4]byte
	binary.BigEndian.PutUint32(p[:], uint32(code))
	c.queueLocked(http2.FrameRSTStream, 0, id, p[:])
}

// goAwayLocked tells the client the last stream we will answer; c.mu is held.
func (c *conn) goAwayLocked(code http2.ErrCode) {
	if c.sentGoAway {
		return
	}
	c.sentGoAway = true
	var p [8]byte
	binary.BigEndian.PutUint32(p[:4], c.maxClientID)
	binary.BigEndian.PutUint32(p[4:], uint32(code))
	c.queueLocked(http2.FrameGoAway, 0, 0, p[:])
}

// waitSpaceLocked waits until the queue is below the high-water mark, so a
// client that does not read holds its streams, not our memory. c.mu is held.
func (c *conn) waitSpaceLocked(s *stream) error {
	for len(c.out) >= highWater && !c.done && !s.reset {
		c.space.Wait()
	}
	return s.errLocked(c)
}

// writeHeaders sends a header block (block, encoded by hpackAppend) for s,
// in HEADERS and as many CONTINUATION frames as the client's frame size
// needs.
func (c *conn) writeHeaders(s *stream, block []byte, end bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.waitSpaceLocked(s); err != nil {
		return err
	}
	t, flags := http2.FrameHeaders, http2.Flags(0)
	if end {
		flags = http2.FlagHeadersEndStream
		s.sentEnd = true
	}
	for first := true; first || len(block) > 0; first = false {
		n := min(len(block), int(c.peerMaxFrame))
		f := flags
		if n == len(block) {
			f |= http2.FlagHeadersEndHeaders
		}
		c.out = frameHeader(c.out, n, t, f, s.id)
		c.out = append(c.out, block[:n]...)
		block = block[n:]
		t, flags = http2.FrameContinuation, 0
	}
	c.wake.Signal()
	return nil
}

// writeData sends p as DATA frames for s as the flow-control windows allow,
// the last one with END_STREAM if end.
func (c *conn) writeData(s *stream, p []byte, end bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for {
			if err := c.waitSpaceLocked(s); err != nil {
				return err
			}
			if len(p) == 0 || min(c.sendWindow, s.sendWindow) > 0 {
				break
			}
			c.space.Wait()
		}
		// The window may be negative (the client lowered its initial
		// window); an empty DATA that ends the stream needs none.
		n := max(0, min(len(p), int(c.peerMaxFrame), int(min(c.sendWindow, s.sendWindow))))
		var flags http2.Flags
		if end && n == len(p) {
			flags = http2.FlagDataEndStream
			s.sentEnd = true
		}
		c.out = frameHeader(c.out, n, http2.FrameData, flags, s.id)
		c.out = append(c.out, p[:n]...)
		c.sendWindow -= int32(n)
		s.sendWindow -= int32(n)
		p = p[n:]
		c.wake.Signal()
		if len(p) == 0 {
			return nil
		}
	}
}
