// Package dohserver is a DNS-over-HTTPS resolver (RFC 8484) on loopback for
// tests: HTTPS in front of a DNS server, which answers every query it
// forwards. Two of them in front of two DNS servers make resolvers that
// disagree, as public ones do while a record propagates.
package dohserver

import (
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Server is a running DoH resolver.
type Server struct {
	srv      *httptest.Server
	upstream string
	queries  atomic.Int64
}

// Start serves DoH at /dns-query, forwarding to the DNS server upstream
// ("host:port").
func Start(upstream string) *Server {
	s := &Server{upstream: upstream}
	mux := http.NewServeMux()
	mux.HandleFunc("/dns-query", s.serve)
	s.srv = httptest.NewTLSServer(mux)
	return s
}

// URL is the resolver's RFC 8484 URL.
func (s *Server) URL() string { return s.srv.URL + "/dns-query" }

// Client trusts the server's certificate.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// Queries counts the queries answered.
func (s *Server) Queries() int64 { return s.queries.Load() }

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	var wire []byte
	var err error
	switch r.Method {
	case http.MethodPost:
		if r.Header.Get("Content-Type") != "application/dns-message" {
			http.Error(w, "want application/dns-message", http.StatusUnsupportedMediaType)
			return
		}
		wire, err = io.ReadAll(io.LimitReader(r.Body, 65535))
	case http.MethodGet:
		wire, err = base64.RawURLEncoding.DecodeString(r.URL.Query().Get("dns"))
	default:
		http.Error(w, "GET or POST", http.StatusMethodNotAllowed)
		return
	}
	q := new(dns.Msg)
	if err != nil || q.Unpack(wire) != nil {
		http.Error(w, "not a DNS message", http.StatusBadRequest)
		return
	}
	c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second}
	in, _, err := c.ExchangeContext(r.Context(), q, s.upstream)
	if err != nil {
		http.Error(w, "upstream: "+err.Error(), http.StatusBadGateway)
		return
	}
	out, err := in.Pack()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	s.queries.Add(1)
	w.Header().Set("Content-Type", "application/dns-message")
	w.Write(out)
}
