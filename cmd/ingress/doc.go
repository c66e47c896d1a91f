// Command ingress is tee-ingress's daemon: it runs inside the TEE next to the
// app, obtains certificates for the app's domains (ACME DNS-01 through a DNS
// provider, or TLS-ALPN-01 answered on its own port), writes the gateway and
// CAA records, terminates TLS, forwards to the app's backends, and publishes
// the evidence bundle that binds the certificates to a TDX quote.
//
// Where to start reading:
//
//   - main.go: main and run, the process around everything else.
//   - config.go: every flag and environment variable (dstack-ingress names),
//     resolved and validated before anything touches DNS, the CA or the disk;
//     bad input is exit status 2 with one line naming what to change.
//   - run.go: the daemon's lifecycle. The listener opens first; stored
//     certificates are served at once; then identity (guest agent), ACME
//     account, DNS records and the certificate manager's loop; every change
//     swaps the served certificates and rebuilds the evidence. Failures are
//     retried with backoff and reported on /readyz, never fatal while
//     something can be served. SIGTERM drains.
//   - alpn.go, selfsigned.go: tls-alpn-01, and the attested
//     self-signed mode with GET /attestation (answered by the proxy in-process).
//   - metrics.go: Prometheus /metrics, /healthz and /readyz.
//   - dev.go: --dev, the whole world on 127.0.0.1 with a simulator, for a
//     laptop. NOT A TEE.
//
// deps.txt lists every non-standard package linked in; TestDeps fails when
// it changes.
package main
