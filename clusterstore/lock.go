package clusterstore

import (
	"context"
	"errors"
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

// end stops renewing sess and revokes its lease, which deletes every key
// held under it; bounded by OpTimeout (etcd's own Session.Close waits up to
// the TTL, and its Mutex cleans up with no deadline at all).
func (s *Store) end(sess *concurrency.Session) {
	sess.Orphan()
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.OpTimeout)
	defer cancel()
	s.cli.Revoke(ctx, sess.Lease())
}

// lock is etcd's lock recipe (a key per waiter under the lock's prefix, on
// the waiter's lease; the oldest holds it), written here so that every call
// has a deadline.
type lock struct {
	s    *Store
	sess *concurrency.Session
	name string
	key  string
	rev  int64 // the key's create revision: the fence
}

var _ acme.StoreLock = (*lock)(nil)

// Lock implements acme.SharedStore, on a lease of its own so that a lapsed
// lock never takes the membership with it.
func (s *Store) Lock(ctx context.Context, name string) (acme.StoreLock, error) {
	sess, err := s.session(ctx, s.ctx)
	if err != nil {
		return nil, err
	}
	pfx := s.full("locks/" + name + "/")
	l := &lock{s: s, sess: sess, name: name, key: fmt.Sprintf("%s%x", pfx, sess.Lease())}
	var resp *clientv3.TxnResponse
	err = s.call(ctx, func(ctx context.Context) (err error) {
		resp, err = s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(l.key), "=", 0)).
			Then(clientv3.OpPut(l.key, "", clientv3.WithLease(sess.Lease()))).
			Else(clientv3.OpGet(l.key)).Commit()
		return err
	})
	if err == nil {
		l.rev = resp.Header.Revision
		if !resp.Succeeded {
			l.rev = resp.Responses[0].GetResponseRange().Kvs[0].CreateRevision
		}
		err = l.waitTurn(ctx, pfx)
	}
	if err != nil {
		s.end(sess)
		return nil, fmt.Errorf("clusterstore: taking lock %s: %w", name, err)
	}
	return l, nil
}

// waitTurn waits until no waiter older than this one is left, then checks
// that the lease did not lapse meanwhile.
func (l *lock) waitTurn(ctx context.Context, pfx string) error {
	s := l.s
	for {
		var resp *clientv3.GetResponse
		if err := s.call(ctx, func(ctx context.Context) (err error) {
			opts := append(clientv3.WithLastCreate(), clientv3.WithMaxCreateRev(l.rev-1))
			resp, err = s.cli.Get(ctx, pfx, opts...)
			return err
		}); err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			break
		}
		if err := l.waitDelete(ctx, string(resp.Kvs[0].Key), resp.Header.Revision); err != nil {
			return err
		}
	}
	var resp *clientv3.GetResponse
	if err := s.call(ctx, func(ctx context.Context) (err error) {
		resp, err = s.cli.Get(ctx, l.key)
		return err
	}); err != nil {
		return err
	}
	if len(resp.Kvs) == 0 {
		return errors.New("the lease lapsed while waiting")
	}
	return nil
}

// waitDelete waits for key to be deleted after revision rev.
func (l *lock) waitDelete(ctx context.Context, key string, rev int64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for resp := range l.s.cli.Watch(wctx, key, clientv3.WithRev(rev+1)) {
		if err := resp.Err(); err != nil {
			return err
		}
		for _, ev := range resp.Events {
			if ev.Type == clientv3.EventTypeDelete {
				return nil
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.New("the watch on the lock ended")
}

func (l *lock) Lost() <-chan struct{} { return l.sess.Done() }

// fenced commits op only if the lock key is still this holder's.
func (l *lock) fenced(ctx context.Context, key string, op clientv3.Op) error {
	var resp *clientv3.TxnResponse
	if err := l.s.call(ctx, func(ctx context.Context) (err error) {
		resp, err = l.s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(l.key), "=", l.rev)).Then(op).Commit()
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

// Unlock releases the lock: revoking its lease deletes the key.
func (l *lock) Unlock(ctx context.Context) error {
	err := l.s.call(ctx, func(ctx context.Context) error {
		_, err := l.s.cli.Revoke(ctx, l.sess.Lease())
		return err
	})
	l.sess.Orphan()
	return err
}
