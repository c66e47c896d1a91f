package clusterstore

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/tee-ingress/tee-ingress/acme"
	"github.com/tee-ingress/tee-ingress/internal/etcdtest"
)

func startEtcd(t *testing.T) *etcdtest.Server {
	t.Helper()
	srv, err := etcdtest.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

func key(b byte) []byte { return bytes.Repeat([]byte{b}, KeySize) }

func open(t testing.TB, srv *etcdtest.Server, self string, sealKey []byte, stateDir string) *Store {
	t.Helper()
	s, err := Open(Options{Endpoints: []string{srv.Endpoint()}, Prefix: "/tee-ingress/app/", SealKey: sealKey,
		StateDir: stateDir, Self: self, LockTTL: 2 * time.Second, OpTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func raw(t testing.TB, srv *etcdtest.Server) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func TestCompareAndSwap(t *testing.T) {
	srv := startEtcd(t)
	ctx := t.Context()
	a := open(t, srv, "a", key(1), t.TempDir())
	b := open(t, srv, "b", key(1), t.TempDir())
	if _, _, err := a.Get(ctx, "history"); !errors.Is(err, acme.ErrNotFound) {
		t.Fatalf("Get of a missing key: %v, want ErrNotFound", err)
	}
	if err := a.CompareAndSwap(ctx, "history", []byte("one"), 0); err != nil {
		t.Fatal(err)
	}
	if err := b.CompareAndSwap(ctx, "history", []byte("two"), 0); !errors.Is(err, acme.ErrConflict) {
		t.Fatalf("create over an existing key: %v, want ErrConflict", err)
	}
	data, ver, err := b.Get(ctx, "history")
	if err != nil || string(data) != "one" {
		t.Fatalf("b reads %q, %v", data, err)
	}
	if err := b.CompareAndSwap(ctx, "history", []byte("two"), ver); err != nil {
		t.Fatal(err)
	}
	if err := a.CompareAndSwap(ctx, "history", []byte("three"), ver); !errors.Is(err, acme.ErrConflict) {
		t.Fatalf("swap on a stale version: %v, want ErrConflict", err)
	}
	if data, _, _ := a.Get(ctx, "history"); string(data) != "two" {
		t.Fatalf("a reads %q, want two", data)
	}
	// Nothing in etcd is readable without the key.
	resp, err := raw(t, srv).Get(ctx, "/tee-ingress/app/history")
	if err != nil || bytes.Contains(resp.Kvs[0].Value, []byte("two")) {
		t.Fatalf("stored value is not sealed: %q %v", resp.Kvs[0].Value, err)
	}
}

// TestTampering: each way an operator of the store can alter a value is
// refused on read and on watch, and counted.
func TestTampering(t *testing.T) {
	srv := startEtcd(t)
	ctx := t.Context()
	cli := raw(t, srv)
	a := open(t, srv, "a", key(1), t.TempDir())
	b := open(t, srv, "b", key(1), t.TempDir())
	other := open(t, srv, "other-app", key(2), t.TempDir())
	events := b.Watch(ctx, "certs/")
	getRaw := func(k string) []byte {
		resp, err := cli.Get(ctx, "/tee-ingress/app/"+k)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("raw get %s: %v", k, err)
		}
		return resp.Kvs[0].Value
	}
	putRaw := func(k string, v []byte) {
		if _, err := cli.Put(ctx, "/tee-ingress/app/"+k, string(v)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.CompareAndSwap(ctx, "certs/x", []byte("gen1"), acme.AnyVersion); err != nil {
		t.Fatal(err)
	}
	old := getRaw("certs/x")
	if err := a.CompareAndSwap(ctx, "certs/x", []byte("gen2"), acme.AnyVersion); err != nil {
		t.Fatal(err)
	}
	if d, _, err := b.Get(ctx, "certs/x"); err != nil || string(d) != "gen2" {
		t.Fatalf("b reads %q, %v", d, err)
	}
	waitEvent(t, events, "gen1")
	waitEvent(t, events, "gen2")
	if err := other.CompareAndSwap(ctx, "certs/other", []byte("foreign"), acme.AnyVersion); err != nil {
		t.Fatal(err)
	}
	flipped := slices.Clone(getRaw("certs/x"))
	flipped[len(flipped)-1] ^= 1
	cases := []struct {
		name  string
		key   string
		value []byte
	}{
		{"bytes changed", "certs/x", flipped},
		{"copied under another key", "certs/y", getRaw("certs/x")},
		{"older generation written back", "certs/x", old},
		{"sealed under another app's key", "certs/x", getRaw("certs/other")},
	}
	for i, c := range cases {
		before := b.Stats().Rejected
		putRaw(c.key, c.value)
		if d, _, err := b.Get(ctx, c.key); !errors.Is(err, acme.ErrRejected) || d != nil {
			t.Errorf("%s: Get = %q, %v; want ErrRejected", c.name, d, err)
		}
		// The watch counts it too, and delivers nothing.
		marker := []byte{byte('0' + i)}
		if err := a.CompareAndSwap(ctx, "certs/marker", marker, acme.AnyVersion); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, events, string(marker))
		if got := b.Stats().Rejected - before; got != 2 {
			t.Errorf("%s: rejected counted %d times, want 2 (Get and watch)", c.name, got)
		}
	}
	// A restarted instance still refuses the rollback: generations are on disk.
	dir := t.TempDir()
	c1 := open(t, srv, "c", key(1), dir)
	if err := a.CompareAndSwap(ctx, "certs/x", []byte("gen3"), acme.AnyVersion); err != nil {
		t.Fatal(err)
	}
	if d, _, err := c1.Get(ctx, "certs/x"); err != nil || string(d) != "gen3" {
		t.Fatalf("c reads %q, %v", d, err)
	}
	c1.Close()
	putRaw("certs/x", old)
	c2 := open(t, srv, "c", key(1), dir)
	if _, _, err := c2.Get(ctx, "certs/x"); !errors.Is(err, acme.ErrRejected) {
		t.Fatalf("after restart, rolled-back value: %v, want ErrRejected", err)
	}
}

func waitEvent(t *testing.T, ch <-chan acme.StoreEvent, data string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case e := <-ch:
			if string(e.Data) == data {
				return
			}
		case <-deadline:
			t.Fatalf("no watch event with %q", data)
		}
	}
}

// TestFence: a holder whose lease lapsed (as after a pause) cannot write
// over its successor.
func TestFence(t *testing.T) {
	srv := startEtcd(t)
	ctx := t.Context()
	a := open(t, srv, "a", key(1), t.TempDir())
	b := open(t, srv, "b", key(1), t.TempDir())
	la, err := a.Lock(ctx, "set")
	if err != nil {
		t.Fatal(err)
	}
	if err := la.Put(ctx, "certs/set", []byte("from a")); err != nil {
		t.Fatal(err)
	}
	// b waits while a holds the lock.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = b.Lock(short, "set")
	cancel()
	if err == nil {
		t.Fatal("b took a held lock")
	}
	// a's lease lapses, as it does when a is paused past the TTL.
	if _, err := raw(t, srv).Revoke(ctx, la.(*lock).sess.Lease()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-la.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("a was not told its lock lapsed")
	}
	lb, err := b.Lock(ctx, "set")
	if err != nil {
		t.Fatal(err)
	}
	if err := lb.Put(ctx, "certs/set", []byte("from b")); err != nil {
		t.Fatal(err)
	}
	if err := la.Put(ctx, "certs/set", []byte("late a")); !errors.Is(err, acme.ErrFenced) {
		t.Fatalf("a's late write: %v, want ErrFenced", err)
	}
	if err := la.Delete(ctx, "certs/set"); !errors.Is(err, acme.ErrFenced) {
		t.Fatalf("a's late delete: %v, want ErrFenced", err)
	}
	if d, _, err := a.Get(ctx, "certs/set"); err != nil || string(d) != "from b" {
		t.Fatalf("value is %q, %v; want b's", d, err)
	}
	if err := lb.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestMembers(t *testing.T) {
	srv := startEtcd(t)
	a := open(t, srv, "a", key(1), t.TempDir())
	b := open(t, srv, "b", key(1), t.TempDir())
	waitMembers(t, a, []string{"a", "b"})
	b.Close()
	waitMembers(t, a, []string{"a"})
}

func waitMembers(t *testing.T, s *Store, want []string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := s.Members(t.Context())
		if err == nil && slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("members %v, %v; want %v", got, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestOpenRefuses(t *testing.T) {
	good := Options{Endpoints: []string{"http://127.0.0.1:1"}, Prefix: "/p/", SealKey: key(1), StateDir: t.TempDir(), Self: "a"}
	for _, c := range []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"no endpoints", func(o *Options) { o.Endpoints = nil }, "Endpoints: no etcd endpoints"},
		{"prefix without slash", func(o *Options) { o.Prefix = "/p" }, "ending in /"},
		{"short key", func(o *Options) { o.SealKey = key(1)[:16] }, "need 32"},
		{"no state dir", func(o *Options) { o.StateDir = "" }, "StateDir: no state directory"},
		{"lease under a second", func(o *Options) { o.LockTTL = time.Millisecond }, "1 s"},
	} {
		o := good
		c.edit(&o)
		if _, err := Open(o); err == nil || !bytes.Contains([]byte(err.Error()), []byte(c.want)) {
			t.Errorf("%s: %v, want an error naming %q", c.name, err, c.want)
		}
	}
}
