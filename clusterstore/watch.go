package clusterstore

import (
	"context"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tee-ingress/tee-ingress/acme"
)

// Watch implements acme.SharedStore. The client re-establishes the watch
// after etcd restarts; values that fail to open are counted and dropped.
func (s *Store) Watch(ctx context.Context, prefix string) <-chan acme.StoreEvent {
	out := make(chan acme.StoreEvent, 16)
	full := s.full(prefix)
	wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), full, clientv3.WithPrefix())
	go func() {
		defer close(out)
		for resp := range wch {
			if err := resp.Err(); err != nil {
				s.errors.Add(1)
				s.log.Warn("shared store watch interrupted; it resumes", "prefix", full, "err", err)
				continue
			}
			for _, ev := range resp.Events {
				k := string(ev.Kv.Key)
				e := acme.StoreEvent{Key: strings.TrimPrefix(k, s.opts.Prefix)}
				if ev.Type == clientv3.EventTypeDelete {
					e.Deleted = true
				} else {
					plain, err := s.openValue(k, ev.Kv.Value)
					if err != nil {
						continue
					}
					e.Data = plain
				}
				select {
				case out <- e:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// Members implements acme.SharedStore.
func (s *Store) Members(ctx context.Context) ([]string, error) {
	pfx := s.full("members/")
	var resp *clientv3.GetResponse
	if err := s.call(ctx, func(ctx context.Context) (err error) {
		resp, err = s.cli.Get(ctx, pfx, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		return err
	}); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		ids = append(ids, strings.TrimPrefix(string(kv.Key), pfx))
	}
	return ids, nil
}

// keepMembership keeps members/<Self> alive on a lease until Close,
// registering again after the lease lapses (etcd down, instance paused).
func (s *Store) keepMembership() {
	key := s.full("members/" + s.opts.Self)
	wait := time.Second
	for s.ctx.Err() == nil {
		sess, err := s.session(s.ctx, s.ctx)
		if err == nil {
			err = s.call(s.ctx, func(ctx context.Context) error {
				_, err := s.cli.Put(ctx, key, "", clientv3.WithLease(sess.Lease()))
				return err
			})
			if err == nil {
				wait = time.Second
				select {
				case <-sess.Done():
				case <-s.ctx.Done():
					// Leave at once rather than after the TTL, so
					// that an issuer does not wait for our ack.
					ctx, cancel := context.WithTimeout(context.Background(), s.opts.OpTimeout)
					s.cli.Revoke(ctx, sess.Lease())
					cancel()
				}
			}
			sess.Close()
		}
		if err != nil {
			s.log.Debug("shared store membership not registered; retrying", "err", err, "retry_in", wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
		}
		wait = min(wait*2, 30*time.Second)
	}
}
