// Package rawio drives a TCP socket with raw non-blocking system calls on
// Linux: reads and writes that skip the scheduler's syscall hand-off, and a
// MSG_PEEK check that a pooled backend connection is silent before reuse. It
// is part of the proxy's fast path (proxy/fastpath.go is its one importer);
// on other platforms and on the plain core it is not used.
package rawio
