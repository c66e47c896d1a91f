// Command dstack-sim runs a dstack guest-agent simulator on a unix socket, so
// that tee-ingress, or any dstack SDK client, can run on a laptop.
//
// Its quotes have the real TDX layout but are signed under a simulator root
// CA, not Intel's: they prove nothing, and verifiers reject them unless given
// the simulator's root explicitly.
//
// Start with run in main.go.
package main
