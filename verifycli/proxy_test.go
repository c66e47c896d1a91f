package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/proxy"
	"github.com/tee-ingress/tee-ingress/verifycli/report"
)

// TestDomainThroughProxy verifies the deployment served the way the
// daemon serves it: package proxy terminating TLS with the evidence handler,
// in tcp mode (evidence recognised from the first bytes) and in http mode.
func TestDomainThroughProxy(t *testing.T) {
	for _, mode := range []proxy.Mode{proxy.ModeTCP, proxy.ModeHTTP} {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			w := newWorld(t)
			backend := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { fmt.Fprintln(rw, "hello from the app") }))
			t.Cleanup(backend.Close)
			target, err := proxy.ParseTarget(strings.TrimPrefix(backend.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			store := &proxy.CertStore{}
			c := w.cert.tlsCert()
			if err := store.Set(testDomain, map[string]*tls.Certificate{testDomain: &c}); err != nil {
				t.Fatal(err)
			}
			srv, err := proxy.New(proxy.Config{Certs: store, Mode: mode, Default: target, Evidence: w.handler})
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ln) }()
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				srv.Shutdown(ctx)
				if err := <-done; err != nil && !errors.Is(err, proxy.ErrServerClosed) {
					t.Errorf("Serve: %v", err)
				}
			})

			r := runCLI(t, append(w.args(), "--connect", ln.Addr().String())...)
			if r.code != 0 || r.report.Summary.Fail+r.report.Summary.Warn != 0 {
				t.Fatalf("exit %d, summary %+v, want 0 with no failure or warning:\n%s", r.code, r.report.Summary, r.dump())
			}
			for _, name := range []string{checkTLSLeafBundle, checkLiveQuote, prefixLive + "identity"} {
				if c := r.check(t, name); c.Status != report.StatusPass {
					t.Errorf("%s: %s", name, c.Status)
				}
			}
		})
	}
}
