package dnscaa

import (
	"context"
	"github.com/tee-ingress/tee-ingress/internal/syncbuf"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tee-ingress/tee-ingress/dnsread"
	"github.com/tee-ingress/tee-ingress/internal/cfemu"
	"github.com/tee-ingress/tee-ingress/internal/dnsserver"
)

const cfToken = "tok_9f2c1d7e5a3b4c6d8e0f1a2b3c4d5e6f7a8b9c0d"

// lookupMap is a credential lookup over a map.
func lookupMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// cfEnv is the Cloudflare stand-in: a DNS server holding the zones, the API
// emulator over it, and a Client built by NewProvider like cmd/ingress does.
type cfEnv struct {
	dns    *dnsserver.Server
	cf     *cfemu.Emulator
	client *Client
	logs   *syncbuf.Buffer
	logger *slog.Logger
}

func newCFEnv(t *testing.T, timeout time.Duration, zones ...string) *cfEnv {
	t.Helper()
	s := startDNS(t, zones...)
	e := cfemu.New(s, cfToken)
	t.Cleanup(e.Close)
	logs := &syncbuf.Buffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := NewProvider(ProviderConfig{
		Name:        "cloudflare",
		Lookup:      lookupMap(map[string]string{"CLOUDFLARE_API_TOKEN": cfToken}),
		HTTPClient:  e.HTTPClient(),
		CallTimeout: timeout,
		Logger:      logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &cfEnv{dns: s, cf: e, client: c, logs: logs, logger: logger}
}

// writes returns the API requests that change something.
func (e *cfEnv) writes() []string {
	var out []string
	for _, r := range e.cf.Requests() {
		if !strings.HasPrefix(r, "GET ") {
			out = append(out, r)
		}
	}
	return out
}

func (e *cfEnv) resolver() *dnsread.Resolver {
	return &dnsread.Resolver{Servers: []string{e.dns.Addr()}, Timeout: 2 * time.Second}
}

// snapshot is every record of the DNS server as zone-file lines.
func snapshot(s *dnsserver.Server) []string {
	var out []string
	for _, rr := range s.All() {
		out = append(out, rr.String())
	}
	return out
}

// query asks the server for name/qtype over real DNS and returns the answer
// records of that type as presentation data.
func query(t *testing.T, server, name string, qtype uint16) []string {
	t.Helper()
	m, err := dnsread.QueryServer(context.Background(), server, name, qtype, false, 2*time.Second)
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	var out []string
	for _, rr := range m.Answer {
		if rr.Header().Rrtype == qtype && fqdn(rr.Header().Name) == fqdn(name) {
			out = append(out, strings.TrimPrefix(rr.String(), rr.Header().String()))
		}
	}
	return out
}

func mustAdd(s *dnsserver.Server, lines ...string) {
	for _, l := range lines {
		s.Add(dnsserver.MustRR(l))
	}
}

// faultOn returns a fault function hitting requests with the given method.
func faultOn(method string, f cfemu.Fault) func(*http.Request) cfemu.Fault {
	return func(r *http.Request) cfemu.Fault {
		if r.Method == method {
			return f
		}
		return cfemu.Fault{}
	}
}

var _ = dns.TypeTXT
