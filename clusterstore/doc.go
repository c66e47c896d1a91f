// Package clusterstore is the store the replicas of one app share, on etcd:
// acme.SharedStore with every value sealed.
//
// The store is not trusted. Each value is sealed with AES-256-GCM under a
// key that only instances of this app can derive (from the dstack KMS); the
// additional data binds the full etcd key, so a value cannot be moved, and a
// generation number, so a value cannot be rolled back: an instance records
// the highest generation it accepted per key in its state directory and
// refuses anything lower. A value that fails either check is logged, counted
// and treated as absent; it is never handed to the caller.
//
// The lock is etcd's lease-based mutex; writes made under it are etcd
// transactions conditional on the lock key still being the holder's, so a
// holder paused past its lease cannot overwrite its successor's writes.
package clusterstore
