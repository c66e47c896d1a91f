package h2fast

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestEndInNegativeWindow: a client that lowers its initial window below
// what it was sent leaves the stream's window negative; a body that then
// ends with no more data still ends the stream, with an empty DATA frame
// (which needs no window), not a malformed one.
func TestEndInNegativeWindow(t *testing.T) {
	finish := make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		http.ReadRequest(bufio.NewReader(c))
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
		<-finish
		io.WriteString(c, "0\r\n\r\n")
	}()
	var n [4]atomic.Uint64
	e := New(context.Background(), Config{MaxHeaderBytes: 16 << 10, HeaderTimeout: 5 * time.Second, ClientTimeout: 5 * time.Second,
		ServerTimeout: 5 * time.Second}, testHost{backend: ln.Addr().String()},
		slog.New(slog.DiscardHandler), Counters{Streams: &n[0], ToBackends: &n[1], ToClients: &n[2], BackendErrors: &n[3]})
	defer e.Close()
	srv, cl := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Serve(Client{Read: srv, Conn: srv, Write: func(p []byte) error { _, err := srv.Write(p); return err },
			CloseWrite: func() {}, Addr: "127.0.0.1:1"}, func(abort, kick func()) {})
	}()
	defer func() { cl.Close(); <-done }()
	cl.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		var blk bytes.Buffer
		enc := hpack.NewEncoder(&blk)
		for _, hf := range []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "https"},
			{Name: ":authority", Value: "a.test"}, {Name: ":path", Value: "/b"}} {
			enc.WriteField(hf)
		}
		io.WriteString(cl, http2.ClientPreface)
		fr := http2.NewFramer(cl, nil)
		fr.WriteSettings()
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk.Bytes(), EndStream: true, EndHeaders: true})
	}()
	fr := http2.NewFramer(cl, cl)
	lowered := false
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() && lowered {
				close(finish) // the stream's window is now 65535-5-65535 = -5
			}
		case *http2.DataFrame:
			if f.StreamEnded() {
				if len(f.Data()) != 0 {
					t.Fatalf("the last DATA carried %q into a negative window", f.Data())
				}
				return
			}
			if string(f.Data()) != "hello" || lowered {
				t.Fatalf("DATA %q", f.Data())
			}
			lowered = true
			go fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		case *http2.RSTStreamFrame, *http2.GoAwayFrame:
			t.Fatalf("%v", f)
		}
	}
}
