package clusterstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/tee-ingress/tee-ingress/acme"
	"github.com/tee-ingress/tee-ingress/internal/fielderr"
)

// Options configure Open. Fields marked required are checked.
type Options struct {
	// Endpoints are etcd client URLs, e.g. https://10.0.0.5:2379. Required.
	Endpoints []string
	// TLS for etcd. Nil means plain connections.
	TLS *tls.Config
	// Username and Password authenticate to etcd. Zero means none.
	Username, Password string
	// Prefix is prepended to every key; it must end in "/". Required.
	Prefix string
	// SealKey is the 32-byte AES-256-GCM key. Required.
	SealKey []byte
	// StateDir keeps the highest generation seen per key. Required.
	StateDir string
	// Self names this instance (its dstack instance id). Required.
	Self string
	// LockTTL is the lease of a lock and of membership. Zero means 15 s.
	LockTTL time.Duration
	// OpTimeout bounds each call to etcd. Zero means 5 s.
	OpTimeout time.Duration
	// Logger receives rejections and connection trouble. Nil discards.
	Logger *slog.Logger
}

// Stats are the store's counters, for metrics.
type Stats struct {
	Rejected   uint64        // values that failed to open or were rolled back
	Errors     uint64        // failed calls to etcd
	Calls      uint64        // calls to etcd
	CallTime   time.Duration // total time spent in them
	Generation uint64        // highest generation written or accepted
}

// Store is an acme.SharedStore on etcd.
type Store struct {
	opts Options
	cli  *clientv3.Client
	seal *sealer
	gens *generations
	log  *slog.Logger

	ctx    context.Context // ends at Close; owns the membership goroutine
	cancel context.CancelFunc
	wg     sync.WaitGroup

	rejected, errors, calls, nanos, maxGen atomic.Uint64
}

var _ acme.SharedStore = (*Store)(nil)

// Open checks opts and connects; etcd need not be reachable yet (calls
// fail, and are retried by the caller, until it is).
func Open(opts Options) (*Store, error) {
	switch {
	case len(opts.Endpoints) == 0:
		return nil, &fielderr.Error{Field: "Endpoints", Problem: "no etcd endpoints", Accepted: "host:port of each etcd member"}
	case opts.Prefix == "" || !strings.HasSuffix(opts.Prefix, "/"):
		return nil, &fielderr.Error{Field: "Prefix", Value: opts.Prefix, Problem: "not a key prefix", Accepted: "a prefix ending in /"}
	case opts.StateDir == "":
		return nil, &fielderr.Error{Field: "StateDir", Problem: "no state directory", Accepted: "a writable directory"}
	case opts.Self == "":
		return nil, errors.New("clusterstore: no instance name")
	}
	seal, err := newSealer(opts.SealKey)
	if err != nil {
		return nil, err
	}
	if opts.LockTTL <= 0 {
		opts.LockTTL = 15 * time.Second
	}
	if opts.LockTTL < time.Second {
		return nil, fmt.Errorf("clusterstore: lock TTL %s is under etcd's 1 s lease granularity", opts.LockTTL)
	}
	if opts.OpTimeout <= 0 {
		opts.OpTimeout = 5 * time.Second
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	gens, err := loadGenerations(filepath.Join(opts.StateDir, "cluster-generations.json"))
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: opts.Endpoints, TLS: opts.TLS, Username: opts.Username, Password: opts.Password,
		DialTimeout: opts.OpTimeout, DialKeepAliveTime: 5 * time.Second, DialKeepAliveTimeout: 3 * time.Second,
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("clusterstore: etcd client for %v: %w", opts.Endpoints, err)
	}
	s := &Store{opts: opts, cli: cli, seal: seal, gens: gens, log: logger}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Go(s.keepMembership)
	return s, nil
}

// Close stops membership (the lease lapses) and the client.
func (s *Store) Close() error {
	s.cancel()
	s.wg.Wait()
	return s.cli.Close()
}

// Self implements acme.SharedStore.
func (s *Store) Self() string { return s.opts.Self }

// Stats returns the counters.
func (s *Store) Stats() Stats {
	return Stats{Rejected: s.rejected.Load(), Errors: s.errors.Load(), Calls: s.calls.Load(),
		CallTime: time.Duration(s.nanos.Load()), Generation: s.maxGen.Load()}
}

// call times one etcd call under OpTimeout and counts its failure.
func (s *Store) call(ctx context.Context, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.OpTimeout)
	defer cancel()
	start := time.Now()
	err := f(ctx)
	s.calls.Add(1)
	s.nanos.Add(uint64(time.Since(start)))
	if err != nil {
		s.errors.Add(1)
		return fmt.Errorf("clusterstore: etcd at %s: %w", strings.Join(s.opts.Endpoints, ","), err)
	}
	return nil
}

func (s *Store) full(key string) string { return s.opts.Prefix + key }

// openValue authenticates a raw value read at etcd key k.
func (s *Store) openValue(k string, raw []byte) ([]byte, error) {
	gen, plain, err := s.seal.open(k, raw)
	if err == nil {
		err = s.gens.accept(k, gen)
		if errors.Is(err, errPersist) {
			s.log.Warn("cannot record the generation of a shared value; accepted", "key", k, "err", err)
			err = nil
		}
	}
	if err != nil {
		s.rejected.Add(1)
		s.log.Error("shared store value rejected: not served", "key", k, "reason", err)
		return nil, fmt.Errorf("%w: %s: %v", acme.ErrRejected, k, err)
	}
	s.bumpGen(gen)
	return plain, nil
}

func (s *Store) bumpGen(gen uint64) {
	for {
		cur := s.maxGen.Load()
		if gen <= cur || s.maxGen.CompareAndSwap(cur, gen) {
			return
		}
	}
}

// Get implements acme.SharedStore.
func (s *Store) Get(ctx context.Context, key string) ([]byte, int64, error) {
	k := s.full(key)
	var resp *clientv3.GetResponse
	err := s.call(ctx, func(ctx context.Context) (err error) {
		resp, err = s.cli.Get(ctx, k)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, acme.ErrNotFound
	}
	plain, err := s.openValue(k, resp.Kvs[0].Value)
	if err != nil {
		return nil, resp.Kvs[0].ModRevision, err
	}
	return plain, resp.Kvs[0].ModRevision, nil
}

// sealNext seals plain for k with a generation above both what this
// instance has seen and what the store holds now (written by another
// instance), so that every instance accepts it.
func (s *Store) sealNext(ctx context.Context, k string, plain []byte) ([]byte, uint64, error) {
	gen := s.gens.get(k)
	var resp *clientv3.GetResponse
	if err := s.call(ctx, func(ctx context.Context) (err error) {
		resp, err = s.cli.Get(ctx, k)
		return err
	}); err != nil {
		return nil, 0, err
	}
	if len(resp.Kvs) > 0 {
		if g, _, err := s.seal.open(k, resp.Kvs[0].Value); err == nil && g > gen {
			gen = g
		}
	}
	gen++
	return s.seal.seal(k, gen, plain), gen, nil
}

func (s *Store) wrote(k string, gen uint64) {
	if err := s.gens.accept(k, gen); err != nil {
		s.log.Warn("cannot record the generation of a shared value written", "key", k, "err", err)
	}
	s.bumpGen(gen)
}

// CompareAndSwap implements acme.SharedStore.
func (s *Store) CompareAndSwap(ctx context.Context, key string, data []byte, version int64) error {
	k := s.full(key)
	sealed, gen, err := s.sealNext(ctx, k, data)
	if err != nil {
		return err
	}
	var cmps []clientv3.Cmp
	switch {
	case version == 0:
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
	case version > 0:
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", version))
	}
	var resp *clientv3.TxnResponse
	if err := s.call(ctx, func(ctx context.Context) (err error) {
		resp, err = s.cli.Txn(ctx).If(cmps...).Then(clientv3.OpPut(k, string(sealed))).Commit()
		return err
	}); err != nil {
		return err
	}
	if !resp.Succeeded {
		return fmt.Errorf("%s: %w", key, acme.ErrConflict)
	}
	s.wrote(k, gen)
	return nil
}
