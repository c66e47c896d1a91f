// Package proxy terminates TLS inside the TEE and forwards the decrypted traffic
// to the app's backends, so that no one outside the TEE sees plaintext.
//
// Start with Config (what a Server is handed: a CertSource, the routes and an
// evidence http.Handler), New and Server.Serve. The package knows nothing of ACME
// or of the evidence bundle: certificates arrive through CertSource (CertStore is
// the ready-made, atomically swappable implementation, which also answers
// tls-alpn-01 challenges) and evidence through a plain http.Handler.
//
// Two modes:
//
//   - ModeTCP (the default) forwards the decrypted byte stream of any protocol,
//     propagating half-closes, optionally behind a PROXY protocol v2 header. HTTP/1.x
//     requests for /evidences are recognised from the first bytes and answered
//     in-process; everything else is forwarded without waiting: the backend is
//     dialled at once and the decision "backend" is taken as soon as the client's
//     bytes diverge from "GET /evidences" / "HEAD /evidences" or the backend speaks
//     first. HTTP/2 cannot be recognised this way, so tcp mode offers no ALPN
//     protocol unless told to (Config.ALPN); evidence over h2 needs ModeHTTP.
//   - ModeHTTP is an HTTP/1.1 and HTTP/2 server that serves /evidences itself and
//     reverse-proxies the rest with net/http/httputil: streaming, websockets,
//     gRPC to h2c backends, X-Forwarded-For/-Proto/-Host set by us. Plain
//     HTTP/1.1 requests to plain HTTP backends take a fast path (h1.go) that
//     forwards them on one goroutine with pooled backend connections; any
//     request outside its strict subset hands the connection, with what was
//     read of it, to net/http, so behaviour at the edges is net/http's.
//
// Both modes route by server name (ROUTING_MAP: exact and one-label wildcard
// keys, then the default target; http mode by Host), bound the number of
// connections and every phase of a connection with timeouts, and drain
// gracefully on Shutdown.
//
// The paths answered in-process are /evidences by default; Config.LocalPaths
// replaces them (the attested self-signed mode answers /attestation), in both
// modes, with the same first-bytes decision in tcp mode.
//
// Limits of tcp mode, by design: once a connection has been handed to the
// backend it stays there (an evidence request later on the same keep-alive
// connection reaches the backend); a client that sends a strict prefix of an
// evidence request line, such as "GET /ev", and then waits for the server
// before sending more, waits until the backend speaks or a timeout ends it.
//
// Cost, in tcp mode on Linux: a connection whose client and backend are both
// silent holds no goroutine (an epoll watcher waits for its sockets) and no
// buffer; bytes are moved with pooled buffers, several TLS records go out in one
// write, and sockets are read and written with raw non-blocking system calls,
// which keeps the scheduler from handing the processor between threads on
// every write when the proxy has one CPU.
//
// Core and fast path: the core is what the standard library gives (crypto/tls,
// two copies with CloseWrite, net/http and httputil.ReverseProxy). The
// performance engine beside it is the raw socket I/O (internal/rawio), the
// epoll watcher (internal/epoll) and the HTTP/1.1 fast path (h1.go, still in
// this package). fastpath.go is the one file that reaches internal/...;
// Config.PlainCore turns the engine off at run time, -tags plaincore leaves
// internal/... out of the build. The core is the reference: the suite runs on
// both (TestPlainCoreSuite).
package proxy
