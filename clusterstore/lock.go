package clusterstore

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/tee-ingress/tee-ingress/acme"
)

// session grants a lease of LockTTL (bounded by OpTimeout, since a grant to
// an unreachable etcd would otherwise wait) and keeps it alive until life
// ends or the lease lapses.
func (s *Store) session(ctx, life context.Context) (*concurrency.Session, error) {
	var lease *clientv3.LeaseGrantResponse
	if err := s.call(ctx, func(ctx context.Context) (err error) {
		lease, err = s.cli.Grant(ctx, int64(s.opts.LockTTL/time.Second))
		return err
	}); err != nil {
		return nil, err
	}
	sess, err := concurrency.NewSession(s.cli, concurrency.WithLease(lease.ID), concurrency.WithContext(life))
	if err != nil {
		return nil, fmt.Errorf("clusterstore: keeping a lease alive: %w", err)
	}
	return sess, nil
}

type lock struct {
	s    *Store
	sess *concurrency.Session
	mu   *concurrency.Mutex
	name string
}

var _ acme.StoreLock = (*lock)(nil)

// Lock implements acme.SharedStore: etcd's mutex on a session of its own,
// so a lapsed lock never takes the membership lease with it.
func (s *Store) Lock(ctx context.Context, name string) (acme.StoreLock, error) {
	sess, err := s.session(ctx, s.ctx)
	if err != nil {
		return nil, err
	}
	mu := concurrency.NewMutex(sess, s.full("locks/"+name))
	start := time.Now()
	err = mu.Lock(ctx)
	s.calls.Add(1)
	s.nanos.Add(uint64(time.Since(start)))
	if err != nil {
		sess.Close()
		s.errors.Add(1)
		return nil, fmt.Errorf("clusterstore: taking lock %s: %w", name, err)
	}
	return &lock{s: s, sess: sess, mu: mu, name: name}, nil
}

func (l *lock) Lost() <-chan struct{} { return l.sess.Done() }

// fenced commits op only if the lock key is still this holder's.
func (l *lock) fenced(ctx context.Context, key string, op clientv3.Op) error {
	var resp *clientv3.TxnResponse
	if err := l.s.call(ctx, func(ctx context.Context) (err error) {
		resp, err = l.s.cli.Txn(ctx).If(l.mu.IsOwner()).Then(op).Commit()
		return err
	}); err != nil {
		return err
	}
	if !resp.Succeeded {
		return fmt.Errorf("%s under lock %s: %w", key, l.name, acme.ErrFenced)
	}
	return nil
}

func (l *lock) Put(ctx context.Context, key string, data []byte) error {
	k := l.s.full(key)
	sealed, gen, err := l.s.sealNext(ctx, k, data)
	if err != nil {
		return err
	}
	if err := l.fenced(ctx, key, clientv3.OpPut(k, string(sealed))); err != nil {
		return err
	}
	l.s.wrote(k, gen)
	return nil
}

func (l *lock) Delete(ctx context.Context, key string) error {
	return l.fenced(ctx, key, clientv3.OpDelete(l.s.full(key)))
}

// Unlock releases the lock and revokes its lease.
func (l *lock) Unlock(ctx context.Context) error {
	err := l.s.call(ctx, l.mu.Unlock)
	l.sess.Close()
	return err
}
