package acme

import (
	"context"
	"errors"
)

// SharedStore is the store that the instances (replicas) of one app share:
// certificates, tls-alpn-01 challenges and the certificate history live
// there, and its lock elects the one instance that orders. clusterstore
// implements it on etcd, sealing every value; the manager sees plaintext.
//
// Keys are relative ("certs/app.example.com", "history"); the
// implementation places them under its own prefix.
type SharedStore interface {
	// Get returns the value at key and its version. A missing key is
	// ErrNotFound; a value that fails to authenticate is ErrRejected and
	// must not be used.
	Get(ctx context.Context, key string) (data []byte, version int64, err error)
	// CompareAndSwap writes data at key if its version is still version
	// (0: the key must be absent; AnyVersion: whatever it is). A lost race
	// is ErrConflict. It is not fenced: any instance may append history.
	CompareAndSwap(ctx context.Context, key string, data []byte, version int64) error
	// Lock blocks until this instance holds the lock called name, or ctx
	// ends. The lock lapses on its own when the instance stops renewing
	// it (killed, paused, cut off).
	Lock(ctx context.Context, name string) (StoreLock, error)
	// Watch reports every change under prefix until ctx ends, then closes
	// the channel. Values that fail to authenticate are not reported.
	Watch(ctx context.Context, prefix string) <-chan StoreEvent
	// Members lists the instances connected now, Self among them.
	Members(ctx context.Context) ([]string, error)
	// Self names this instance.
	Self() string
}

// StoreLock is a held lock. Its writes are fenced: each succeeds only while
// the lock is still held, so a holder paused past its lease cannot overwrite
// what its successor wrote.
type StoreLock interface {
	Put(ctx context.Context, key string, data []byte) error
	Delete(ctx context.Context, key string) error
	// Lost is closed when the lock lapsed.
	Lost() <-chan struct{}
	Unlock(ctx context.Context) error
}

// StoreEvent is one change seen by Watch.
type StoreEvent struct {
	Key     string // relative, as given to Put
	Data    []byte // nil when Deleted
	Deleted bool
}

// AnyVersion makes CompareAndSwap unconditional.
const AnyVersion int64 = -1

// Errors of a SharedStore.
var (
	ErrNotFound = errors.New("not in the shared store")
	ErrConflict = errors.New("the value changed meanwhile")
	ErrFenced   = errors.New("the lock was lost, so the write was refused")
	ErrRejected = errors.New("the value failed authentication and was ignored")
)
