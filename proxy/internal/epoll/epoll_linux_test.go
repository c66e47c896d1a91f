//go:build linux

package epoll

import (
	"net"
	"testing"
	"time"
)

// TestWatcher: a registered socket fires once when its peer writes; a
// cancelled one never fires; Close stops the goroutine.
func TestWatcher(t *testing.T) {
	w, err := New()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pair := func() (net.Conn, *net.TCPConn) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return c, s.(*net.TCPConn)
	}
	c1, s1 := pair()
	defer c1.Close()
	defer s1.Close()
	c2, s2 := pair()
	defer c2.Close()
	defer s2.Close()
	rc1, _ := s1.SyscallConn()
	rc2, _ := s2.SyscallConn()
	fired := make(chan int, 2)
	if _, err := w.Add(rc1, func() { fired <- 1 }); err != nil {
		t.Fatal(err)
	}
	id2, err := w.Add(rc2, func() { fired <- 2 })
	if err != nil {
		t.Fatal(err)
	}
	if !w.Cancel(id2) || w.Cancel(id2) {
		t.Fatal("Cancel: want true once, then false")
	}
	c2.Write([]byte("x"))
	c1.Write([]byte("x"))
	select {
	case n := <-fired:
		if n != 1 {
			t.Fatalf("socket %d fired, want 1", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the written socket did not fire")
	}
	w.Close()
	select {
	case n := <-fired:
		t.Fatalf("socket %d fired after the first (cancelled or one-shot)", n)
	default:
	}
}
