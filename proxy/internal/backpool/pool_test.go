package backpool

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// backend accepts on loopback and hands each accepted connection to the test.
func backend(t *testing.T) (string, <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			ch <- c
		}
	}()
	return ln.Addr().String(), ch
}

func accepted(t *testing.T, ch <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("the backend accepted nothing")
		return nil
	}
}

func newPool() *Pool {
	var d net.Dialer
	return &Pool{Dial: func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }}
}

// TestReuseOnlySilent: a connection comes back from the pool only while the
// backend has neither sent a byte nor closed it.
func TestReuseOnlySilent(t *testing.T) {
	addr, conns := backend(t)
	p := newPool()
	defer p.Close()
	ctx := context.Background()

	c1, reused, err := p.Get(ctx, addr)
	if err != nil || reused {
		t.Fatalf("first Get: reused %v, err %v", reused, err)
	}
	b1 := accepted(t, conns)
	p.Put(c1)
	c2, reused, err := p.Get(ctx, addr)
	if err != nil || !reused || c2 != c1 {
		t.Fatalf("silent idle connection not reused: reused %v, same %v, err %v", reused, c2 == c1, err)
	}

	// The backend speaks while the connection is idle: never handed out.
	p.Put(c2)
	b1.Write([]byte("late"))
	waitReadable(t, c2)
	c3, reused, err := p.Get(ctx, addr)
	if err != nil || reused || c3 == c1 {
		t.Fatalf("a connection the backend wrote to was reused: reused %v, err %v", reused, err)
	}
	if _, err := c1.Read(make([]byte, 8)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("the discarded connection is not closed: %v", err)
	}

	// The backend closes an idle one: not handed out either.
	b3 := accepted(t, conns)
	p.Put(c3)
	b3.Close()
	waitReadable(t, c3)
	c4, reused, err := p.Get(ctx, addr)
	if err != nil || reused {
		t.Fatalf("a connection the backend closed was reused: reused %v, err %v", reused, err)
	}
	c4.Close()
	if n := p.Idle(); n != 0 {
		t.Errorf("pool holds %d, want 0", n)
	}
}

// waitReadable waits until the peer's bytes or close have reached c's socket,
// without reading them.
func waitReadable(t *testing.T, c *Conn) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for c.idle.Silent() {
		if time.Now().After(deadline) {
			t.Fatal("the backend's bytes never arrived")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestCloseAndLimits: Close closes what is idle and what is put afterwards;
// at most MaxIdlePerBackend are kept per address.
func TestCloseAndLimits(t *testing.T) {
	addr, conns := backend(t)
	p := newPool()
	var got []*Conn
	for range MaxIdlePerBackend + 1 {
		c, _, err := p.Get(context.Background(), addr)
		if err != nil {
			t.Fatal(err)
		}
		accepted(t, conns)
		got = append(got, c)
	}
	for _, c := range got {
		p.Put(c)
	}
	if n := p.Idle(); n != MaxIdlePerBackend {
		t.Fatalf("pool holds %d, want %d", n, MaxIdlePerBackend)
	}
	if _, err := got[len(got)-1].Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("the connection over the limit is not closed: %v", err)
	}
	p.Close()
	if _, err := got[0].Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Close left an idle connection open: %v", err)
	}
	late, _, err := newPool().Get(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	p.Put(late)
	if _, err := late.Read(make([]byte, 1)); errors.Is(err, io.EOF) || !errors.Is(err, net.ErrClosed) {
		t.Errorf("Put after Close kept the connection: %v", err)
	}
}
