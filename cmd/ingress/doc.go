// Command ingress terminates TLS inside the TEE and forwards to the app.
//
// This is the static-certificate entry point: it serves a certificate and key
// from files through package proxy. Start with run in main.go: flags and
// environment become a proxy.Config, the server runs until SIGTERM and then
// drains.
package main
