package main

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"golang.org/x/net/netutil"

	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/proxy"
)

// attestFront serves CERT_SOURCE=self-signed: TLS with the self-signed
// certificate, GET /attestation answered in-process, everything else
// reverse-proxied to the backends (HTTP/1.1 and HTTP/2, websockets, gRPC to
// h2c backends). It exists because package proxy recognises only
// /evidences; once proxy.Config can route /attestation to a handler, this
// mode should use package proxy like the others (and gain tcp mode).
type attestFront struct {
	cfg    *Config
	srv    *http.Server
	attest http.Handler
	plain  *http.Transport // http:// backends, HTTP/1.1
	tls    *http.Transport // https:// backends
	h2c    *http.Transport // h2c:// and grpc:// backends, HTTP/2 with prior knowledge
}

// servingFront is what runDaemon serves with: a *proxy.Server, or the
// attestFront.
type servingFront interface {
	Serve(ln net.Listener) error
	Shutdown(ctx context.Context) error
}

var (
	_ servingFront = (*proxy.Server)(nil)
	_ servingFront = (*attestFront)(nil)
)

type targetKey struct{}

func newAttestFront(cfg *Config, cert *tls.Certificate, attest http.Handler, log *slog.Logger) *attestFront {
	dialer := &net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: time.Minute}
	base := func() *http.Transport {
		return &http.Transport{
			DialContext: dialer.DialContext, ResponseHeaderTimeout: cfg.ServerTimeout, IdleConnTimeout: 90 * time.Second,
			MaxIdleConnsPerHost: 64, TLSHandshakeTimeout: 10 * time.Second, ForceAttemptHTTP2: true,
			TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12},
		}
	}
	f := &attestFront{cfg: cfg, attest: attest, plain: base(), tls: base(), h2c: base()}
	f.plain.ForceAttemptHTTP2 = false
	f.h2c.Protocols = new(http.Protocols)
	f.h2c.Protocols.SetUnencryptedHTTP2(true)
	rp := &httputil.ReverseProxy{
		Rewrite:       f.rewrite,
		Transport:     f,
		FlushInterval: -1, // streams (SSE, gRPC) go out as they come
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			log.Debug("backend error", "host", r.Host, "err", err)
			http.Error(w, "bad gateway", http.StatusBadGateway)
		},
	}
	mux := http.NewServeMux()
	mux.Handle(evidence.AttestationPath, attest)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := f.route(r.Host); !ok {
			http.Error(w, "no route for this host", http.StatusMisdirectedRequest)
			return
		}
		rp.ServeHTTP(w, r)
	})
	protos := cfg.ALPN
	if len(protos) == 0 {
		protos = []string{"h2", "http/1.1"}
	}
	f.srv = &http.Server{
		Handler: mux,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12, NextProtos: protos,
		},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       cfg.ClientTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return f
}

func (f *attestFront) Serve(ln net.Listener) error {
	ln = netutil.LimitListener(ln, f.cfg.MaxConns)
	err := f.srv.ServeTLS(ln, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return proxy.ErrServerClosed
	}
	return err
}

func (f *attestFront) Shutdown(ctx context.Context) error {
	err := f.srv.Shutdown(ctx)
	if err != nil {
		f.srv.Close()
	}
	for _, t := range []*http.Transport{f.plain, f.tls, f.h2c} {
		t.CloseIdleConnections()
	}
	return err
}

// route picks the backend for a Host header: ROUTING_MAP (exact, then a
// one-label wildcard), then TARGET_ENDPOINT.
func (f *attestFront) route(host string) (proxy.Target, bool) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, r := range f.cfg.Routes {
		if r.Host == host {
			return r.Target, true
		}
	}
	for _, r := range f.cfg.Routes {
		if covers(r.Host, host) {
			return r.Target, true
		}
	}
	return f.cfg.Default, !f.cfg.Default.IsZero()
}

func (f *attestFront) rewrite(pr *httputil.ProxyRequest) {
	t, _ := f.route(pr.In.Host)
	scheme := "http"
	if t.Scheme == proxy.SchemeHTTPS {
		scheme = "https"
	}
	pr.SetURL(&url.URL{Scheme: scheme, Host: t.Addr})
	pr.Out.Host = pr.In.Host
	pr.SetXForwarded()
	pr.Out = pr.Out.WithContext(context.WithValue(pr.Out.Context(), targetKey{}, t))
}

// RoundTrip sends a request over the transport its target's scheme needs.
func (f *attestFront) RoundTrip(r *http.Request) (*http.Response, error) {
	t, _ := r.Context().Value(targetKey{}).(proxy.Target)
	switch t.Scheme {
	case proxy.SchemeHTTPS:
		return f.tls.RoundTrip(r)
	case proxy.SchemeH2C, proxy.SchemeGRPC:
		return f.h2c.RoundTrip(r)
	}
	return f.plain.RoundTrip(r)
}
