//go:build linux

package rawio

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// TestRawIOConcurrentWrites: net.Conn allows writes from several goroutines
// (net/http's Transport does it when a protocol switch overlaps its
// writeLoop); each Write must land whole and unbroken, and under -race the
// shared per-call state must not race.
func TestRawIOConcurrentWrites(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const writers, writes, size = 4, 200, 4096
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		b, _ := io.ReadAll(c)
		got <- b
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := New(c)
	if r == nil {
		t.Fatal("New: nil for a TCP connection")
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := bytes.Repeat([]byte{'a' + byte(w)}, size)
			for range writes {
				if n, err := r.Write(msg); n != size || err != nil {
					t.Errorf("writer %d: wrote %d of %d: %v", w, n, size, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	c.(*net.TCPConn).CloseWrite()
	b := <-got
	c.Close()
	if len(b) != writers*writes*size {
		t.Fatalf("received %d bytes, want %d", len(b), writers*writes*size)
	}
	count := map[byte]int{}
	for off := 0; off < len(b); off += size {
		chunk := b[off : off+size]
		if bytes.Count(chunk, chunk[:1]) != size {
			t.Fatalf("write at offset %d interleaved with another: starts %q, holds %d distinct bytes", off, chunk[0], distinct(chunk))
		}
		count[chunk[0]]++
	}
	for w := range writers {
		if count['a'+byte(w)] != writes {
			t.Errorf("writer %d: %d whole writes received, want %d", w, count['a'+byte(w)], writes)
		}
	}
}

func distinct(b []byte) int {
	seen := map[byte]bool{}
	for _, x := range b {
		seen[x] = true
	}
	return len(seen)
}
