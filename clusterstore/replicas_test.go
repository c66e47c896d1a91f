package clusterstore

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-acme/lego/v4/challenge/tlsalpn01"

	"github.com/tee-ingress/tee-ingress/acme"
	"github.com/tee-ingress/tee-ingress/internal/acmeca"
	"github.com/tee-ingress/tee-ingress/internal/dnsserver"
	"github.com/tee-ingress/tee-ingress/internal/etcdtest"
)

// A cluster is N replicas of one app, each with its own state directory and
// TLS listener, behind a round-robin TCP front that the CA validates
// through, sharing one etcd and one pebble.
type cluster struct {
	t      testing.TB
	etcd   *etcdtest.Server
	ca     *acmeca.CA
	front  *front
	keyDir string
	sets   [][]string
	// recheck is the managers' RecheckInterval (zero: their default).
	recheck time.Duration
}

type replica struct {
	id    string
	dir   string
	store *Store
	mgr   *acme.Manager
	ln    net.Listener
	stop  context.CancelFunc
	done  chan struct{}
	chal  sync.Map // domain -> *tls.Certificate
}

func newCluster(t testing.TB, domain string) *cluster {
	t.Helper()
	etcd, err := etcdtest.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Stop)
	fr := startFront(t)
	dns, err := dnsserver.Start("example.test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dns.Close() })
	dns.Add(dnsserver.MustRR(domain + ". 60 IN A 127.0.0.1"))
	ca, err := acmeca.Start(acmeca.Options{DNSAddr: dns.Addr(), TLSPort: fr.port()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ca.Close)
	c := &cluster{t: t, etcd: etcd, ca: ca, front: fr, keyDir: t.TempDir(), sets: [][]string{{domain}}}
	// One account for the app, as the KMS-derived key gives every replica.
	if _, err := (&acme.FileKeySource{Path: filepath.Join(c.keyDir, "account.key")}).AccountKey(t.Context()); err != nil {
		t.Fatal(err)
	}
	return c
}

// start runs replica id with state in dir (a new one when empty).
func (c *cluster) start(id, dir string) *replica {
	t := c.t
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	r := &replica{id: id, dir: dir, done: make(chan struct{})}
	st, err := Open(Options{Endpoints: []string{c.etcd.Endpoint()}, Prefix: "/tee-ingress/app/", SealKey: key(9),
		StateDir: dir, Self: id, LockTTL: 2 * time.Second, OpTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r.store = st
	r.mgr, err = acme.New(acme.Config{
		// A client each: lego adjusts the one it is given.
		DirectoryURL: c.ca.DirectoryURL(), HTTPClient: &http.Client{Transport: c.ca.HTTPClient().Transport, Timeout: 30 * time.Second},
		Logger:          slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("replica", id),
		RecheckInterval: c.recheck,
		Keys:            &acme.FileKeySource{Path: filepath.Join(c.keyDir, "account.key")},
		StateDir:        dir, Challenge: acme.TLSALPN01, Solver: r, Shared: st,
		Backoff: acme.Backoff{Initial: 100 * time.Millisecond, Max: time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.ln, err = tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: r.getCertificate, NextProtos: []string{"h2", "http/1.1", tlsalpn01.ACMETLS1Protocol}})
	if err != nil {
		t.Fatal(err)
	}
	go r.serve()
	c.front.add(r.ln.Addr().String())
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	// As cmd/ingress does: the stored certificate first, with no network.
	dead, cancelDead := context.WithCancel(ctx)
	cancelDead()
	r.mgr.Ensure(dead, c.sets[0])
	go func() {
		defer close(r.done)
		r.mgr.Run(ctx, c.sets)
	}()
	t.Cleanup(r.close)
	return r
}

func (r *replica) close() {
	if r.stop == nil {
		return
	}
	r.stop()
	<-r.done
	r.ln.Close()
	r.store.Close()
	r.stop = nil
}

func (r *replica) Present(domain, _, keyAuth string) error {
	cert, err := tlsalpn01.ChallengeCert(domain, keyAuth)
	if err != nil {
		return err
	}
	r.chal.Store(domain, cert)
	return nil
}

func (r *replica) CleanUp(domain, _, _ string) error {
	r.chal.Delete(domain)
	return nil
}

func (r *replica) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if slices.Contains(hello.SupportedProtos, tlsalpn01.ACMETLS1Protocol) {
		if c, ok := r.chal.Load(hello.ServerName); ok {
			return c.(*tls.Certificate), nil
		}
		return nil, fmt.Errorf("replica %s: no challenge for %s", r.id, hello.ServerName)
	}
	if c := r.mgr.Current([]string{hello.ServerName}); c != nil {
		return c.TLS, nil
	}
	return nil, fmt.Errorf("replica %s: no certificate for %s", r.id, hello.ServerName)
}

func (r *replica) serve() {
	for {
		conn, err := r.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			conn.(*tls.Conn).Handshake()
		}()
	}
}

// serial is the serial of the leaf this replica serves, over TLS.
func (r *replica) serial(domain string) string {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", r.ln.Addr().String(),
		&tls.Config{ServerName: domain, InsecureSkipVerify: true})
	if err != nil {
		return ""
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
}

// front spreads connections over the replicas in turn, as a TCP balancer.
type front struct {
	ln    net.Listener
	mu    sync.Mutex
	addrs []string
	next  int
	conns atomic.Int64
}

func startFront(t testing.TB) *front {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &front{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go f.serve()
	return f
}

func (f *front) port() int { return f.ln.Addr().(*net.TCPAddr).Port }

func (f *front) add(addr string) {
	f.mu.Lock()
	f.addrs = append(f.addrs, addr)
	f.mu.Unlock()
}

func (f *front) serve() {
	for {
		in, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		addr := f.addrs[f.next%len(f.addrs)]
		f.next++
		f.mu.Unlock()
		f.conns.Add(1)
		go func() {
			defer in.Close()
			out, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				return
			}
			defer out.Close()
			in.SetDeadline(time.Now().Add(10 * time.Second))
			out.SetDeadline(time.Now().Add(10 * time.Second))
			go io.Copy(out, in)
			io.Copy(in, out)
		}()
	}
}

// waitServing waits until every replica serves a leaf and all serve the
// same one, and returns its serial.
func waitServing(t testing.TB, domain string, rs ...*replica) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var serials []string
		for _, r := range rs {
			serials = append(serials, r.serial(domain))
		}
		if serials[0] != "" && !slices.ContainsFunc(serials, func(s string) bool { return s != serials[0] }) {
			return serials[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas serve %v", serials)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReplicasOneOrder: three replicas, one store: one order, validated
// through a round-robin front on the first attempt, the same leaf on all
// three, in everyone's shared history.
func TestReplicasOneOrder(t *testing.T) {
	const domain = "app.example.test"
	c := newCluster(t, domain)
	rs := []*replica{c.start("r1", ""), c.start("r2", ""), c.start("r3", "")}
	serial := waitServing(t, domain, rs...)
	if n := c.ca.Orders(); n != 1 {
		t.Fatalf("%d orders at the CA, want 1", n)
	}
	leaders := 0
	for _, r := range rs {
		st := r.mgr.StatusOf(c.sets[0])
		if st.Failures != 0 || st.LastError != "" {
			t.Errorf("%s: failed attempts %d: %s", r.id, st.Failures, st.LastError)
		}
		if st.RenewalCount == 1 {
			leaders++
		}
	}
	if leaders != 1 {
		t.Errorf("%d replicas ordered, want 1", leaders)
	}
	if c.front.conns.Load() < 1 {
		t.Error("the CA never went through the front")
	}
	for _, r := range rs {
		waitHistory(t, r, serial)
	}
	cli := raw(t, c.etcd)
	for _, k := range []string{"certs/" + domain + ".json", "history"} {
		resp, err := cli.Get(t.Context(), "/tee-ingress/app/"+k)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("%s not in etcd: %v", k, err)
		}
		t.Logf("store bytes for %s: %d", k, len(resp.Kvs[0].Value))
	}
}

func waitHistory(t testing.TB, r *replica, serial string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, l := range r.mgr.SharedHistory() {
			if l.SerialNumber.Text(16) == serial {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: serial %s not in the shared history (%d entries)", r.id, serial, len(r.mgr.SharedHistory()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReplicasStoreDown: with etcd stopped every replica keeps serving, one
// restarted meanwhile serves from its state directory, and once etcd is
// back they converge with no new order; a full restart of all three on
// empty state directories takes the certificate from the store: no order.
func TestReplicasStoreDown(t *testing.T) {
	const domain = "app.example.test"
	c := newCluster(t, domain)
	rs := []*replica{c.start("r1", ""), c.start("r2", ""), c.start("r3", "")}
	serial := waitServing(t, domain, rs...)
	c.etcd.Stop()
	rs[2].close()
	rs[2] = c.start("r3", rs[2].dir)
	if got := waitServing(t, domain, rs...); got != serial {
		t.Fatalf("with etcd down the replicas serve %s, want %s", got, serial)
	}
	if err := c.etcd.Restart(); err != nil {
		t.Fatal(err)
	}
	waitMembersOf(t, rs[0].store, 3)
	for _, r := range rs {
		waitHistory(t, r, serial)
		r.close()
	}
	fresh := []*replica{c.start("n1", ""), c.start("n2", ""), c.start("n3", "")}
	if got := waitServing(t, domain, fresh...); got != serial {
		t.Fatalf("fresh replicas serve %s, want %s from the store", got, serial)
	}
	if n := c.ca.Orders(); n != 1 {
		t.Fatalf("%d orders at the CA, want 1", n)
	}
}

func waitMembersOf(t testing.TB, s *Store, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := s.Members(t.Context())
		if err == nil && len(got) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("members %v, %v; want %d", got, err, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReplicasRenewUnderLoad: the CA's ARI window moves into the past for
// the served leaf; all three see it due, one orders, all swap, and not one
// of the handshakes spread over them meanwhile fails.
func TestReplicasRenewUnderLoad(t *testing.T) {
	const domain = "app.example.test"
	c := newCluster(t, domain)
	c.recheck = 200 * time.Millisecond
	rs := []*replica{c.start("r1", ""), c.start("r2", ""), c.start("r3", "")}
	old := waitServing(t, domain, rs...)
	leaf := rs[0].mgr.Current(c.sets[0]).Leaf
	ctx, stop := context.WithTimeout(t.Context(), 60*time.Second)
	defer stop()
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				if s := handshake(c.front.ln.Addr().String(), domain); s != "" {
					ok.Add(1)
				} else if ctx.Err() == nil {
					failed.Add(1)
				}
			}
		})
	}
	now := time.Now()
	if err := c.ca.SetRenewalInfo(leaf, now.Add(-time.Hour), now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	renewed := waitServingOther(t, domain, old, rs...)
	before := ok.Load()
	for ok.Load() < before+100 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	wg.Wait()
	if n := c.ca.Orders(); n != 2 {
		t.Errorf("%d orders at the CA, want 2 (issuance and one renewal)", n)
	}
	if failed.Load() != 0 {
		t.Errorf("%d of %d handshakes failed during the renewal", failed.Load(), failed.Load()+ok.Load())
	}
	t.Logf("renewed %s -> %s; %d handshakes through the front, %d failed", old, renewed, ok.Load(), failed.Load())
}

func handshake(addr, domain string) string {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr,
		&tls.Config{ServerName: domain, InsecureSkipVerify: true})
	if err != nil {
		return ""
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
}

// waitServingOther waits until all replicas serve one leaf other than old.
func waitServingOther(t testing.TB, domain, old string, rs ...*replica) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		s := waitServing(t, domain, rs...)
		if s != old {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("still serving %s", old)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
