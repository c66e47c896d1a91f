//go:build !nodev

package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// cloudflareAPI is the base URL libdns/cloudflare calls (a constant there).
const cloudflareAPI = "https://api.cloudflare.com/client/v4"

// cloudflareHook is the CLOUDFLARE_API_URL test hook: nil unless it is set.
// Production builds (-tags nodev) have a version that refuses it.
func cloudflareHook(s *settings) (*http.Client, error) {
	u, _ := s.get("CLOUDFLARE_API_URL")
	if u == "" {
		return nil, nil
	}
	caFile, _ := s.get("CLOUDFLARE_API_CA")
	return cloudflareOverride(u, caFile)
}

// cloudflareOverride returns an HTTP client that sends Cloudflare API calls
// to base instead (CLOUDFLARE_API_URL: for tests and development against an
// emulator), trusting the roots in caFile besides the system's. Requests
// for any other URL are refused.
func cloudflareOverride(base, caFile string) (*http.Client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" {
		return nil, bad("CLOUDFLARE_API_URL", base, "an http(s) base URL like https://127.0.0.1:8443/client/v4")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, configErrorf("CLOUDFLARE_API_CA=%s cannot be read: %s", caFile, err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, bad("CLOUDFLARE_API_CA", caFile, "a file of PEM CERTIFICATE blocks")
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: &rebase{from: cloudflareAPI, to: strings.TrimRight(base, "/"), base: tr}}, nil
}

// rebase rewrites request URLs under from to the same path under to.
type rebase struct {
	from, to string
	base     http.RoundTripper
}

func (r *rebase) RoundTrip(req *http.Request) (*http.Response, error) {
	s := req.URL.String()
	if !strings.HasPrefix(s, r.from) {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("CLOUDFLARE_API_URL is set: refusing a request to %s", req.URL.Redacted())
	}
	u, err := url.Parse(r.to + strings.TrimPrefix(s, r.from))
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	out := req.Clone(req.Context())
	out.URL = u
	out.Host = ""
	return r.base.RoundTrip(out)
}
