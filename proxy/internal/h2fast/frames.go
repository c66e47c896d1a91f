package h2fast

import (
	"errors"

	"golang.org/x/net/http2"
)

// The read loop's handling of each frame type, as RFC 9113 and net/http's
// server have it: a frame on a stream in the wrong state is a stream error,
// one that breaks the connection's state is a connection error (GOAWAY).

func (c *conn) process(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return c.onHeaders(f)
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.SettingsFrame:
		return c.onSettings(f)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.PingFrame:
		if !f.IsAck() {
			c.queue(http2.FramePing, http2.FlagPingAck, 0, f.Data[:])
		}
	case *http2.RSTStreamFrame:
		return c.onReset(f)
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			c.streamError(f.StreamID, http2.ErrCodeProtocol) // RFC 9113 5.3.1
		}
	case *http2.GoAwayFrame:
		// The client closes when it is done; ours says no stream is lost.
		c.mu.Lock()
		c.goAwayLocked(http2.ErrCodeNo)
		c.mu.Unlock()
	case *http2.PushPromiseFrame:
		return c.connError(http2.ErrCodeProtocol, "a client sent PUSH_PROMISE")
	}
	return nil
}

// closedLocked reports whether id is a stream that existed and ended (so a
// frame on it is STREAM_CLOSED), as against an idle one.
func (c *conn) closedLocked(id uint32) bool {
	return id <= c.maxClientID
}

func (c *conn) onData(f *http2.DataFrame) error {
	id, n := f.StreamID, int32(f.Length)
	c.mu.Lock()
	defer c.mu.Unlock()
	if n > c.recvWindow {
		c.goAwayLocked(http2.ErrCodeFlowControl)
		return errors.New("http2: DATA past the connection's flow-control window")
	}
	c.recvWindow -= n
	s := c.streams[id]
	if s == nil || s.remoteClosed {
		if s == nil && !c.closedLocked(id) {
			c.goAwayLocked(http2.ErrCodeProtocol)
			return errors.New("http2: DATA on an idle stream")
		}
		c.giveBackLocked(nil, n)
		if s != nil || !c.resetLocked(id) {
			c.streamErrorLocked(id, http2.ErrCodeStreamClosed)
		}
		return nil
	}
	if n > s.recvWindow {
		c.giveBackLocked(nil, n)
		c.streamErrorLocked(id, http2.ErrCodeFlowControl)
		return nil
	}
	s.recvWindow -= n
	data := f.Data()
	if pad := n - int32(len(data)); pad > 0 {
		c.giveBackLocked(s, pad)
	}
	s.received += int64(len(data))
	s.body = append(s.body, data...)
	if f.StreamEnded() {
		s.remoteClosed = true
	}
	if s.declared >= 0 && (s.received > s.declared || s.remoteClosed && s.received != s.declared) {
		c.streamErrorLocked(id, http2.ErrCodeProtocol) // RFC 9113 8.1.1
		return nil
	}
	c.space.Broadcast()
	return nil
}

// giveBackLocked returns n bytes of receive window to the client: the
// connection's, and s's if not nil.
func (c *conn) giveBackLocked(s *stream, n int32) {
	if n <= 0 {
		return
	}
	c.recvWindow += n
	c.windowUpdateLocked(0, n)
	if s != nil && !s.remoteClosed {
		s.recvWindow += n
		c.windowUpdateLocked(s.id, n)
	}
}

func (c *conn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	err := f.ForeachSetting(func(st http2.Setting) error {
		if err := st.Valid(); err != nil {
			return err
		}
		switch st.ID {
		case http2.SettingInitialWindowSize:
			delta := int32(st.Val) - c.initWindow
			for _, s := range c.streams {
				if int64(s.sendWindow)+int64(delta) > maxWindow {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
				s.sendWindow += delta
			}
			c.initWindow = int32(st.Val)
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = st.Val
		}
		return nil
	})
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		c.goAwayLocked(http2.ErrCode(ce))
		return errors.New("http2: bad SETTINGS: " + err.Error())
	}
	c.queueLocked(http2.FrameSettings, http2.FlagSettingsAck, 0, nil)
	c.space.Broadcast()
	return nil
}

func (c *conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	inc := int64(f.Increment)
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		if int64(c.sendWindow)+inc > maxWindow {
			c.goAwayLocked(http2.ErrCodeFlowControl)
			return errors.New("http2: WINDOW_UPDATE past 2^31-1 on the connection")
		}
		c.sendWindow += int32(inc)
		c.space.Broadcast()
		return nil
	}
	s := c.streams[f.StreamID]
	switch {
	case s == nil && !c.closedLocked(f.StreamID):
		c.goAwayLocked(http2.ErrCodeProtocol)
		return errors.New("http2: WINDOW_UPDATE on an idle stream")
	case s == nil:
	case int64(s.sendWindow)+inc > maxWindow:
		c.streamErrorLocked(f.StreamID, http2.ErrCodeFlowControl)
	default:
		s.sendWindow += int32(inc)
		c.space.Broadcast()
	}
	return nil
}

func (c *conn) onReset(f *http2.RSTStreamFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.streams[f.StreamID]
	if s == nil {
		if !c.closedLocked(f.StreamID) {
			c.goAwayLocked(http2.ErrCodeProtocol)
			return errors.New("http2: RST_STREAM on an idle stream")
		}
		return nil
	}
	s.abortLocked()
	c.forgetLocked(s)
	c.space.Broadcast() // its goroutine may wait for window or body
	return nil
}
