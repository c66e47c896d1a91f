// Package epoll holds idle sockets without a goroutine each: one epoll
// instance, waited for by one goroutine through the runtime's poller, calls a
// callback once per registration when a socket becomes readable. It is part
// of the proxy's fast path (proxy/fastpath.go is its one importer); the plain
// core keeps a goroutine per connection instead.
package epoll
