package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/acme"
	"github.com/tee-ingress/tee-ingress/clusterstore"
	"github.com/tee-ingress/tee-ingress/dnscaa"
	"github.com/tee-ingress/tee-ingress/dnssetup"
	"github.com/tee-ingress/tee-ingress/internal/acmeca"
	"github.com/tee-ingress/tee-ingress/internal/fielderr"
	"github.com/tee-ingress/tee-ingress/internal/syncbuf"
	"github.com/tee-ingress/tee-ingress/proxy"
)

func lookupMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// TestConfigErrorsBinary runs the real binary with bad environments: each
// exits 2 with one line on stderr naming what to change, sends nothing to
// DNS or the CA, creates no state and echoes no secret.
func TestConfigErrorsBinary(t *testing.T) {
	bin, _ := binaries(t)
	w := newWorld(t, acmeca.Options{})
	var caHits atomic.Int32
	fakeCA := httptest.NewTLSServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { caHits.Add(1) }))
	defer fakeCA.Close()
	caFile := writeServerCert(t, t.TempDir(), "fake-ca.pem", fakeCA.URL+"/")
	cert, key, _ := selfSignedFiles(t, "app.ingress.test")
	const eabSecret = "eab-hmac-secret-value-1234"

	state := t.TempDir()
	base := w.env(state, map[string]string{"ACME_DIRECTORY": fakeCA.URL + "/dir", "ACME_CA_ROOTS": caFile, "METRICS_LISTEN": "127.0.0.1:0"})
	if _, err := parseConfig(nil, lookupMap(base)); err != nil {
		t.Fatalf("the base environment must be valid: %v", err)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want []string // substrings of the one line
	}{
		{"missing DOMAIN", map[string]string{"DOMAIN": ""}, nil, []string{"DOMAIN is not set"}},
		{"missing TARGET", map[string]string{"TARGET_ENDPOINT": ""}, nil, []string{"no backend", "TARGET_ENDPOINT", "ROUTING_MAP"}},
		{"ROUTING_MAP line without =", map[string]string{"ROUTING_MAP": "app.ingress.test=a:1\nbad-line"}, nil, []string{"ROUTING_MAP", "bad-line"}},
		{"ROUTING_MAP bad target", map[string]string{"ROUTING_MAP": "app.ingress.test=a:99999"}, nil, []string{"ROUTING_MAP", "a:99999"}},
		{"ROUTING_MAP key not a domain", map[string]string{"ROUTING_MAP": "other.example=a:1"}, nil, []string{"ROUTING_MAP key \"other.example\"", "DOMAIN"}},
		{"domain without backend", map[string]string{"TARGET_ENDPOINT": "", "DOMAINS": "b.ingress.test", "ROUTING_MAP": "app.ingress.test=a:1"}, nil, []string{"\"b.ingress.test\" has no backend", "ROUTING_MAP"}},
		{"bad TARGET scheme", map[string]string{"TARGET_ENDPOINT": "ftp://app:21"}, nil, []string{"TARGET_ENDPOINT=\"ftp://app:21\"", "ftp"}},
		{"bad timeout", map[string]string{"TIMEOUT_CLIENT": "forever"}, nil, []string{"TIMEOUT_CLIENT=\"forever\"", "10s"}},
		{"negative timeout", map[string]string{"TIMEOUT_CONNECT": "-5s"}, nil, []string{"TIMEOUT_CONNECT=\"-5s\""}},
		{"port out of range", map[string]string{"PORT": "70000"}, []string{}, []string{"PORT=\"70000\"", "1 to 65535"}},
		{"port not a number", map[string]string{"PORT": "https"}, []string{}, []string{"PORT=\"https\""}},
		{"unknown provider", map[string]string{"DNS_PROVIDER": "godaddy"}, nil, []string{"DNS_PROVIDER=\"godaddy\"", "cloudflare"}},
		{"missing credentials", map[string]string{"CLOUDFLARE_API_TOKEN": "", "DNS_PROVIDER": "cloudflare"}, nil, []string{"CLOUDFLARE_API_TOKEN"}},
		{"no provider at all", map[string]string{"CLOUDFLARE_API_TOKEN": ""}, nil, []string{"DNS_PROVIDER", "CLOUDFLARE_API_TOKEN"}},
		{"token with a space", map[string]string{"CLOUDFLARE_API_TOKEN": testToken + " x"}, nil, []string{"CLOUDFLARE_API_TOKEN contains whitespace"}},
		{"wildcard with tls-alpn-01", map[string]string{"DOMAIN": "*.ingress.test", "CHALLENGE_TYPE": "tls-alpn-01"}, nil, []string{"CHALLENGE_TYPE=tls-alpn-01", "*.ingress.test"}},
		{"unknown challenge", map[string]string{"CHALLENGE_TYPE": "http-01"}, nil, []string{"CHALLENGE_TYPE=\"http-01\"", "dns-01, tls-alpn-01 or dns-persist-01"}},
		{"bad DNS_SETUP_MODE", map[string]string{"DNS_SETUP_MODE": "manual"}, nil, []string{"DNS_SETUP_MODE=\"manual\"", "api, print, wait or webhook"}},
		{"dns-01 without a provider", map[string]string{"DNS_SETUP_MODE": "print", "CLOUDFLARE_API_TOKEN": ""}, nil, []string{"no provider credentials are set", "CHALLENGE_TYPE=dns-01 writes the challenge"}},
		{"api mode without credentials", map[string]string{"DNS_SETUP_MODE": "api", "CHALLENGE_TYPE": "dns-persist-01", "CLOUDFLARE_API_TOKEN": ""}, nil, []string{"CLOUDFLARE_API_TOKEN"}},
		{"webhook without URL", map[string]string{"DNS_SETUP_MODE": "webhook", "CHALLENGE_TYPE": "dns-persist-01"}, nil, []string{"DNS_WEBHOOK_URL"}},
		{"webhook without token", map[string]string{"DNS_SETUP_MODE": "webhook", "CHALLENGE_TYPE": "dns-persist-01", "DNS_WEBHOOK_URL": "https://hook.example/x"}, nil, []string{"DNS_WEBHOOK_TOKEN"}},
		{"webhook URL without webhook mode", map[string]string{"DNS_SETUP_MODE": "print", "CHALLENGE_TYPE": "dns-persist-01", "DNS_WEBHOOK_URL": "https://hook.example/x"}, nil, []string{"DNS_WEBHOOK_URL is set but DNS_SETUP_MODE is print"}},
		{"bad DOH_RESOLVERS", map[string]string{"DNS_SETUP_MODE": "wait", "CHALLENGE_TYPE": "dns-persist-01", "DOH_RESOLVERS": "8.8.8.8"}, nil, []string{"DOH_RESOLVERS=\"8.8.8.8\"", "RFC 8484"}},
		{"bad DNS_SETUP_TIMEOUT", map[string]string{"DNS_SETUP_MODE": "wait", "CHALLENGE_TYPE": "dns-persist-01", "DNS_SETUP_TIMEOUT": "-1"}, nil, []string{"DNS_SETUP_TIMEOUT=\"-1\""}},
		{"insecure ACME directory", map[string]string{"ACME_DIRECTORY": "http://ca.example/dir"}, nil, []string{"ACME_DIRECTORY=\"http://ca.example/dir\"", "https://"}},
		{"staging and directory", map[string]string{"ACME_STAGING": "true"}, nil, []string{"ACME_STAGING=true", "ACME_DIRECTORY"}},
		{"static without cert", map[string]string{"CERT_SOURCE": "static"}, nil, []string{"CERT_SOURCE=static needs --cert"}},
		{"static with ACME settings", map[string]string{"CERT_SOURCE": "static", "SET_CAA": "true"}, []string{"--cert", cert, "--key", key}, []string{"SET_CAA", "CERT_SOURCE=acme"}},
		{"unknown cert source", map[string]string{"CERT_SOURCE": "vault"}, nil, []string{"CERT_SOURCE=\"vault\"", "acme, static or self-signed"}},
		{"EAB kid only", map[string]string{"ACME_EAB_KID": "kid-1"}, nil, []string{"ACME_EAB_KID is set but ACME_EAB_HMAC is not"}},
		{"EAB hmac only", map[string]string{"ACME_EAB_HMAC": eabSecret}, nil, []string{"ACME_EAB_HMAC is set but ACME_EAB_KID is not"}},
		{"EAB hmac not base64url", map[string]string{"ACME_EAB_KID": "kid-1", "ACME_EAB_HMAC": eabSecret + "!!"}, nil, []string{"ACME_EAB_HMAC is set but is not base64url"}},
		{"bad LOG_FORMAT", map[string]string{"LOG_FORMAT": "xml"}, nil, []string{"LOG_FORMAT=\"xml\"", "text or json"}},
		{"bad MAXCONN", map[string]string{"MAXCONN": "0"}, nil, []string{"MAXCONN=\"0\""}},
		{"bad PROXY_MODE", map[string]string{"PROXY_MODE": "udp"}, nil, []string{"PROXY_MODE=\"udp\"", "tcp or http"}},
		{"PROXY_PROTOCOL in http mode", map[string]string{"PROXY_MODE": "http", "PROXY_PROTOCOL": "true"}, nil, []string{"PROXY_PROTOCOL=true needs PROXY_MODE=tcp"}},
		{"bad PROXY_PROTOCOL_IN", map[string]string{"PROXY_PROTOCOL_IN": "v2"}, nil, []string{"PROXY_PROTOCOL_IN=\"v2\"", "auto, on or off"}},
		{"bad PROXY_PROTOCOL_FROM", map[string]string{"PROXY_PROTOCOL_FROM": "10.0.0.0/8,gateway"}, nil, []string{"PROXY_PROTOCOL_FROM=\"gateway\"", "CIDRs"}},
		{"PROXY_PROTOCOL_FROM with it off", map[string]string{"PROXY_PROTOCOL_FROM": "10.0.0.0/8", "PROXY_PROTOCOL_IN": "off"}, nil, []string{"PROXY_PROTOCOL_FROM is set but PROXY_PROTOCOL_IN is off"}},
		{"bad UNDERSCORES_IN_HEADERS", map[string]string{"UNDERSCORES_IN_HEADERS": "sometimes"}, nil, []string{"UNDERSCORES_IN_HEADERS=\"sometimes\"", "true or false"}},
		{"bad SELF_SIGNED_FORMAT", map[string]string{"CERT_SOURCE": "self-signed", "SELF_SIGNED_FORMAT": "x509"}, nil, []string{"SELF_SIGNED_FORMAT=\"x509\"", "plain or ra-tls"}},
		{"SELF_SIGNED_FORMAT without self-signed", map[string]string{"SELF_SIGNED_FORMAT": "ra-tls"}, nil, []string{"SELF_SIGNED_FORMAT=ra-tls needs CERT_SOURCE=self-signed"}},
		{"SELF_SIGNED_FORMAT with static", map[string]string{"CERT_SOURCE": "static", "CERT_FILE": "c.pem", "KEY_FILE": "k.pem", "SELF_SIGNED_FORMAT": "ra-tls"}, nil,
			[]string{"SELF_SIGNED_FORMAT=ra-tls needs CERT_SOURCE=self-signed (CERT_SOURCE is static)"}},
		{"bad SET_CAA", map[string]string{"SET_CAA": "maybe"}, nil, []string{"SET_CAA=\"maybe\"", "true or false"}},
		{"bad DOMAIN", map[string]string{"DOMAIN": "app..ingress.test"}, nil, []string{"DOMAIN=\"app..ingress.test\""}},
		{"name on two certificates", map[string]string{"DOMAINS": "a.ingress.test b.ingress.test\nb.ingress.test c.ingress.test"}, nil, []string{"b.ingress.test is on two certificates"}},
		{"name twice on one certificate", map[string]string{"DOMAINS": "a.ingress.test a.ingress.test"}, nil, []string{"lists a.ingress.test twice"}},
		{"ALIAS_DOMAIN without DOMAIN", map[string]string{"DOMAIN": "", "DOMAINS": "x.ingress.test", "ALIAS_DOMAIN": "www.ingress.test"}, nil, []string{"ALIAS_DOMAIN is set but DOMAIN is not"}},
		{"bad ALIAS_DOMAIN", map[string]string{"ALIAS_DOMAIN": "www..ingress.test"}, nil, []string{"ALIAS_DOMAIN \"www..ingress.test\" is not valid"}},
		{"DOMAIN with a space", map[string]string{"DOMAIN": "a.ingress.test b.ingress.test"}, nil, []string{"DOMAIN=\"a.ingress.test b.ingress.test\"", "ALIAS_DOMAIN"}},
		{"bad DOMAINS entry", map[string]string{"DOMAINS": "ok.ingress.test\n-bad-.ingress.test"}, nil, []string{"DOMAINS entry \"-bad-.ingress.test\""}},
		{"bad GATEWAY_DOMAIN", map[string]string{"GATEWAY_DOMAIN": "not a name"}, nil, []string{"GATEWAY_DOMAIN"}},
		{"bad TXT_PREFIX", map[string]string{"TXT_PREFIX": "a.b"}, nil, []string{"TXT_PREFIX"}},
		{"bad ACME_ACCOUNT_KEY", map[string]string{"ACME_ACCOUNT_KEY": "hsm"}, nil, []string{"ACME_ACCOUNT_KEY=\"hsm\"", "kms, file or auto"}},
		{"bad RENEW_DAYS_BEFORE", map[string]string{"RENEW_DAYS_BEFORE": "0"}, nil, []string{"RENEW_DAYS_BEFORE=\"0\""}},
		{"bad ACME_EMAIL", map[string]string{"CERTBOT_EMAIL": "not an address"}, nil, []string{"CERTBOT_EMAIL=\"not an address\""}},
		{"bad METRICS_LISTEN", map[string]string{"METRICS_LISTEN": "metrics"}, nil, []string{"METRICS_LISTEN=\"metrics\""}},
		{"bad ALPN", map[string]string{"ALPN": "h2,,x"}, nil, []string{"ALPN=\"h2,,x\""}},
		{"ALPN beyond http mode", map[string]string{"ALPN": "h3", "PROXY_MODE": "http"}, nil, []string{"ALPN=\"h3\"", "http mode"}},
		{"unreadable ACME_CA_ROOTS", map[string]string{"ACME_CA_ROOTS": "/nonexistent/roots.pem"}, nil, []string{"ACME_CA_ROOTS=/nonexistent/roots.pem cannot be read"}},
		{"bad DNS_RESOLVERS", map[string]string{"DNS_RESOLVERS": "dns.example:port"}, nil, []string{"DNS_RESOLVERS=\"dns.example:port\""}},
		{"unknown flag", nil, []string{"--nope"}, []string{"unknown flag --nope"}},
		{"flag wins over env", map[string]string{"PROXY_MODE": "http"}, []string{"--mode", "l7"}, []string{"--mode=\"l7\""}},
		{"dev with a domain", nil, []string{"--dev", "--domain", "x.example.com"}, []string{"--domain cannot be used with --dev"}},
		{"replicas without dev", nil, []string{"--replicas", "3"}, []string{"--replicas needs --dev"}},
		{"stray argument", nil, []string{"serve"}, []string{"unexpected argument \"serve\""}},
		{"bad CLUSTER_STORE scheme", map[string]string{"CLUSTER_STORE": "redis://r:6379"}, nil, []string{"CLUSTER_STORE=\"redis://r:6379\"", "etcd://host:port"}},
		{"bad CLUSTER_STORE address", map[string]string{"CLUSTER_STORE": "etcd://etcd:2379,etcd2"}, nil, []string{"CLUSTER_STORE=", "etcd://host:port"}},
		{"CLUSTER_STORE with a file account", map[string]string{"CLUSTER_STORE": "etcd://etcd:2379", "ACME_ACCOUNT_KEY": "file"}, nil, []string{"ACME_ACCOUNT_KEY=file", "kms"}},
		{"CLUSTER_STORE with static", map[string]string{"CLUSTER_STORE": "etcd://etcd:2379", "CERT_SOURCE": "static", "CERT_FILE": cert, "KEY_FILE": key, "ACME_DIRECTORY": ""}, nil, []string{"CLUSTER_STORE is set but CERT_SOURCE is static"}},
		{"CLUSTER_PREFIX without a store", map[string]string{"CLUSTER_PREFIX": "/x/"}, nil, []string{"CLUSTER_PREFIX is set but CLUSTER_STORE is not"}},
		{"bad CLUSTER_PREFIX", map[string]string{"CLUSTER_STORE": "etcd://etcd:2379", "CLUSTER_PREFIX": "tee"}, nil, []string{"CLUSTER_PREFIX=\"tee\"", "starts and ends with /"}},
		{"etcd cert without key", map[string]string{"CLUSTER_STORE": "etcd://etcd:2379", "CLUSTER_ETCD_CERT": cert}, nil, []string{"CLUSTER_ETCD_CERT and CLUSTER_ETCD_KEY go together"}},
		{"unreadable etcd CA", map[string]string{"CLUSTER_STORE": "etcd://etcd:2379", "CLUSTER_ETCD_CA": "/nonexistent/ca.pem"}, nil, []string{"CLUSTER_ETCD_CA=/nonexistent/ca.pem cannot be read"}},
		{"etcd user without password", map[string]string{"CLUSTER_STORE": "etcd://etcd:2379", "CLUSTER_ETCD_USER": "ingress"}, nil, []string{"CLUSTER_ETCD_USER and CLUSTER_ETCD_PASSWORD go together"}},
		{"old delegation name", map[string]string{"ACME_CHALLENGE_ALIAS": "deleg.example.net"}, nil, []string{"ACME_CHALLENGE_ALIAS=\"deleg.example.net\"", "DELEGATION_ZONE"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			for k, v := range tc.env {
				env[k] = v
			}
			args := tc.args
			if args == nil {
				args = []string{"--listen", "127.0.0.1:0"}
			}
			p := startIngress(t, bin, env, args...)
			code := p.wait(20 * time.Second)
			stderr := p.stderr.String()
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if code != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0], "ingress: error: ") {
				t.Fatalf("exit %d, stderr %q: want exit 2 and one line", code, stderr)
			}
			for _, want := range tc.want {
				if !strings.Contains(lines[0], want) {
					t.Errorf("stderr %q lacks %q", lines[0], want)
				}
			}
			for _, secret := range []string{testToken, eabSecret} {
				if strings.Contains(stderr, secret) {
					t.Errorf("stderr echoes a secret: %q", stderr)
				}
			}
			if p.stdout.String() != "" {
				t.Errorf("stdout: %q", p.stdout.String())
			}
		})
	}
	if n := len(w.cf.Requests()); n != 0 {
		t.Errorf("the DNS provider got %d requests: %v", n, w.cf.Requests())
	}
	if n := w.dns.Queries(); n != 0 {
		t.Errorf("the DNS server got %d queries", n)
	}
	if n := caHits.Load(); n != 0 {
		t.Errorf("the CA got %d requests", n)
	}
	if w.ca.Orders() != 0 {
		t.Error("pebble got an order")
	}
	for _, d := range []string{"letsencrypt", "evidences"} {
		if fileExists(filepath.Join(state, d)) {
			t.Errorf("state %s was created", d)
		}
	}
}

// TestParseConfig checks what good input becomes.
func TestParseConfig(t *testing.T) {
	base := map[string]string{"DOMAIN": "App.Example.com", "TARGET_ENDPOINT": "app:80", "CLOUDFLARE_API_TOKEN": "tok"}
	for _, tc := range []struct {
		name  string
		env   map[string]string
		args  []string
		check func(t *testing.T, c *Config)
	}{
		{"defaults", nil, nil, func(t *testing.T, c *Config) {
			want := Config{CertSource: "acme", Domains: []string{"app.example.com"}, Primary: "app.example.com", Groups: [][]string{{"app.example.com"}}, Listen: ":443", Port: 443, ProxyProtocolIn: ppAuto,
				Mode: proxy.ModeTCP, Default: proxy.Target{Addr: "app:80"}, MaxConns: 4096, ConnectTimeout: 10 * time.Second,
				ClientTimeout: 86400 * time.Second, ServerTimeout: 86400 * time.Second, DrainTimeout: 10 * time.Second,
				Challenge: acme.DNS01, Directory: acme.LetsEncryptProduction, AccountKey: "auto", StateDir: "/etc/letsencrypt",
				TXTPrefix: "_dstack-app-address", EvidenceDir: "/evidences", EvidenceServer: true, LogLevel: "info",
				DNSSetup: DNSSetup{Mode: dnsModeAPI, Check: strings.Split(defaultDoH, ","), Interval: 15 * time.Second,
					Timeout: 30 * time.Minute, WebhookTimeout: 15 * time.Second}}
			got := *c
			got.DNS, got.DNSProvider = nil, want.DNSProvider
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got  %+v\nwant %+v", got, want)
			}
			if c.DNS == nil || c.DNS.Name() != "cloudflare" {
				t.Fatal("auto did not pick cloudflare from CLOUDFLARE_API_TOKEN")
			}
		}},
		{"durations", map[string]string{"TIMEOUT_CONNECT": "5", "TIMEOUT_CLIENT": "1d", "TIMEOUT_SERVER": "1m30s", "DRAIN_TIMEOUT": "500ms"}, nil, func(t *testing.T, c *Config) {
			if c.ConnectTimeout != 5*time.Second || c.ClientTimeout != 24*time.Hour || c.ServerTimeout != 90*time.Second || c.DrainTimeout != 500*time.Millisecond {
				t.Fatalf("%v %v %v %v", c.ConnectTimeout, c.ClientTimeout, c.ServerTimeout, c.DrainTimeout)
			}
		}},
		{"PORT and flag precedence", map[string]string{"PORT": "8443", "PROXY_MODE": "http"}, []string{"--mode", "tcp"}, func(t *testing.T, c *Config) {
			if c.Listen != ":8443" || c.Port != 8443 || c.Mode != proxy.ModeTCP {
				t.Fatalf("%q %d %v", c.Listen, c.Port, c.Mode)
			}
		}},
		{"domains list", map[string]string{"DOMAINS": "# comment\nb.example.com, c.example.com\n\napp.example.com # again\n*.w.example.com"}, nil, func(t *testing.T, c *Config) {
			if want := []string{"app.example.com", "b.example.com", "c.example.com", "*.w.example.com"}; !reflect.DeepEqual(c.Domains, want) {
				t.Fatalf("%v", c.Domains)
			}
		}},
		{"staging, email alias, EAB, renew days", map[string]string{"CERTBOT_STAGING": "true", "CERTBOT_EMAIL": "ops@example.com",
			"ACME_EAB_KID": "kid", "ACME_EAB_HMAC": "c2VjcmV0", "RENEW_DAYS_BEFORE": "30"}, nil, func(t *testing.T, c *Config) {
			if c.Directory != acme.LetsEncryptStaging || c.Email != "ops@example.com" || c.EAB == nil || c.EAB.KID != "kid" || c.RenewBefore != 30*24*time.Hour {
				t.Fatalf("%+v", c)
			}
		}},
		{"tls-alpn-01 needs no DNS credentials", map[string]string{"CHALLENGE_TYPE": "tls-alpn-01", "CLOUDFLARE_API_TOKEN": ""}, nil, func(t *testing.T, c *Config) {
			if c.Challenge != acme.TLSALPN01 || c.DNS != nil {
				t.Fatalf("%v %v", c.Challenge, c.DNS)
			}
		}},
		{"self-signed defaults to tcp mode like the others", map[string]string{"CERT_SOURCE": "self-signed", "DOMAIN": ""}, nil, func(t *testing.T, c *Config) {
			if c.Mode != proxy.ModeTCP || c.CertSource != sourceSelfSigned || len(c.Domains) != 0 {
				t.Fatalf("%+v", c)
			}
		}},
		{"dev flags", map[string]string{"DOMAIN": "ignored"}, []string{"--dev", "--listen", "127.0.0.1:0", "--mode=http"}, func(t *testing.T, c *Config) {
			if !c.Dev || !reflect.DeepEqual(c.DevArgs, []string{"--listen=127.0.0.1:0", "--mode=http"}) {
				t.Fatalf("%+v", c)
			}
		}},
		{"dstack-ingress settings without effect", map[string]string{"ROUTE53_INITIAL_WEIGHT": "10", "DNS_SETTLE_SECONDS": "30"}, nil, func(t *testing.T, c *Config) {
			if len(c.Warnings) != 2 || !strings.HasPrefix(c.Warnings[0], "ROUTE53_INITIAL_WEIGHT is set but has no effect") {
				t.Fatalf("%q", c.Warnings)
			}
		}},
		{"dstack-ingress ALIAS_DOMAIN: one certificate with both names", map[string]string{"ALIAS_DOMAIN": "WWW.example.com"}, nil, func(t *testing.T, c *Config) {
			if want := [][]string{{"app.example.com", "www.example.com"}}; !reflect.DeepEqual(c.Groups, want) || len(c.Warnings) != 0 {
				t.Fatalf("groups %v, warnings %q", c.Groups, c.Warnings)
			}
		}},
		{"certificate groups", map[string]string{"DOMAINS": "api.example.com  docs.example.com\nb.example.com\nc.example.com app.example.com, d.example.com"}, nil, func(t *testing.T, c *Config) {
			want := [][]string{{"app.example.com", "c.example.com"}, {"api.example.com", "docs.example.com"}, {"b.example.com"}, {"d.example.com"}}
			if !reflect.DeepEqual(c.Groups, want) || c.Primary != "app.example.com" || len(c.Domains) != 6 {
				t.Fatalf("groups %v, domains %v", c.Groups, c.Domains)
			}
		}},
		{"bool flag alone", nil, []string{"--set-caa"}, func(t *testing.T, c *Config) {
			if !c.SetCAA {
				t.Fatal("--set-caa alone is not true")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			for k, v := range tc.env {
				env[k] = v
			}
			c, err := parseConfig(tc.args, lookupMap(env))
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

// TestDstackIngressCompat parses the environments of dstack-ingress's README
// examples (single domain, multi-domain with ROUTING_MAP, wildcard,
// tls-alpn-01), as their compose files set them, to the configuration they
// mean.
func TestDstackIngressCompat(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want func(c *Config) bool
	}{
		{"single domain", map[string]string{
			"DNS_PROVIDER": "cloudflare", "CLOUDFLARE_API_TOKEN": "tok", "DOMAIN": "app.example.com",
			"GATEWAY_DOMAIN": "_.dstack-prod5.phala.network", "CERTBOT_EMAIL": "ops@example.com", "SET_CAA": "true",
			"TARGET_ENDPOINT": "http://app:80",
		}, func(c *Config) bool {
			return reflect.DeepEqual(c.Domains, []string{"app.example.com"}) && c.GatewayDomain == "_.dstack-prod5.phala.network" &&
				c.Email == "ops@example.com" && c.SetCAA && c.Default == (proxy.Target{Scheme: "http", Addr: "app:80"}) &&
				c.Mode == proxy.ModeTCP && c.Port == 443 && c.DNS.Name() == "cloudflare" && c.Challenge == acme.DNS01 &&
				c.StateDir == "/etc/letsencrypt" && c.EvidenceDir == "/evidences" && c.EvidenceServer
		}},
		{"multi-domain with routing", map[string]string{
			"DNS_PROVIDER": "cloudflare", "CLOUDFLARE_API_TOKEN": "tok", "CERTBOT_EMAIL": "", "GATEWAY_DOMAIN": "_.dstack-prod5.phala.network",
			"SET_CAA": "true", "DOMAINS": "app.example.com\napi.example.com\n",
			"ROUTING_MAP": "app.example.com=app-main:80\napi.example.com=app-api:8080\n",
		}, func(c *Config) bool {
			return reflect.DeepEqual(c.Domains, []string{"app.example.com", "api.example.com"}) && c.Primary == "app.example.com" &&
				c.Default.IsZero() && reflect.DeepEqual(c.Routes, []proxy.Route{
				{Host: "app.example.com", Target: proxy.Target{Addr: "app-main:80"}},
				{Host: "api.example.com", Target: proxy.Target{Addr: "app-api:8080"}}}) &&
				c.Email == "" && c.SetCAA
		}},
		{"wildcard", map[string]string{
			"CLOUDFLARE_API_TOKEN": "tok", "DOMAIN": "*.myapp.com", "GATEWAY_DOMAIN": "_.dstack-prod5.phala.network",
			"CERTBOT_EMAIL": "ops@example.com", "SET_CAA": "true", "TARGET_ENDPOINT": "http://app:80",
		}, func(c *Config) bool {
			return reflect.DeepEqual(c.Domains, []string{"*.myapp.com"}) && c.DNS.Name() == "cloudflare" && c.SetCAA
		}},
		{"tls-alpn-01 without DNS credentials", map[string]string{
			"CHALLENGE_TYPE": "tls-alpn-01", "DOMAIN": "app.example.com", "TARGET_ENDPOINT": "http://app:80",
			"GATEWAY_DOMAIN": "_.dstack-prod5.phala.network",
		}, func(c *Config) bool {
			return c.Challenge == acme.TLSALPN01 && c.DNS == nil && c.GatewayDomain != "" && c.DNSSetup.Mode == dnsModeWait &&
				c.DNSSetup.Timeout == 1800*time.Second && c.DNSSetup.Interval == 15*time.Second &&
				reflect.DeepEqual(c.DNSSetup.Check, []string{"https://dns.google/dns-query", "https://cloudflare-dns.com/dns-query"})
		}},
		{"tls-alpn-01 with a webhook (2.3 README)", map[string]string{
			"CHALLENGE_TYPE": "tls-alpn-01", "DOMAIN": "app.example.com", "TARGET_ENDPOINT": "http://app:80",
			"GATEWAY_DOMAIN": "_.dstack-prod5.phala.network", "DNS_SETUP_MODE": "webhook", "DNS_WEBHOOK_URL": "https://ops.example.com/dns",
			"DNS_WEBHOOK_TOKEN": "s3cret", "DNS_SETUP_TIMEOUT": "600", "DNS_SETUP_INTERVAL": "5", "DOH_RESOLVERS": "https://cloudflare-dns.com/dns-query",
		}, func(c *Config) bool {
			return c.DNSSetup.Mode == dnsModeWebhook && c.DNSSetup.WebhookURL == "https://ops.example.com/dns" && c.DNSSetup.WebhookToken == "s3cret" &&
				c.DNSSetup.Timeout == 600*time.Second && c.DNSSetup.Interval == 5*time.Second && len(c.DNSSetup.Check) == 1 && c.DNS == nil
		}},
		{"delegation (2.3 README): the provider writes, the operator's CNAMEs are waited for", map[string]string{
			"DNS_PROVIDER": "cloudflare", "CLOUDFLARE_API_TOKEN": "tok", "DOMAIN": "svc.example.com", "TARGET_ENDPOINT": "app:80",
			"GATEWAY_DOMAIN": "_.dstack-prod5.phala.network", "SET_CAA": "true", "DELEGATION_ZONE": "deleg.example.net",
		}, func(c *Config) bool {
			return c.DNS != nil && c.DelegationZone == "deleg.example.net" && c.DNSSetup.Mode == dnsModeWait && c.Challenge == acme.DNS01
		}},
		{"dns-persist-01 without DNS credentials", map[string]string{
			"CHALLENGE_TYPE": "dns-persist-01", "DOMAINS": "*.example.com\nexample.com", "TARGET_ENDPOINT": "app:80", "SET_CAA": "true",
			"GATEWAY_DOMAIN": "_.dstack-prod5.phala.network", "DNS_SETUP_MODE": "print",
		}, func(c *Config) bool {
			return c.Challenge == acme.DNSPersist01 && c.DNS == nil && c.DNSSetup.Mode == dnsModePrint && len(c.Domains) == 2
		}},
		{"timeouts and limits as in HAProxy", map[string]string{
			"CLOUDFLARE_API_TOKEN": "tok", "DOMAIN": "app.example.com", "TARGET_ENDPOINT": "app:80",
			"MAXCONN": "1000", "TIMEOUT_CONNECT": "5s", "TIMEOUT_CLIENT": "1h", "TIMEOUT_SERVER": "2d", "ALPN": "h2,http/1.1",
			"EVIDENCE_SERVER": "false", "PORT": "8443", "TXT_PREFIX": "_tapp-address",
		}, func(c *Config) bool {
			return c.MaxConns == 1000 && c.ConnectTimeout == 5*time.Second && c.ClientTimeout == time.Hour && c.ServerTimeout == 48*time.Hour &&
				reflect.DeepEqual(c.ALPN, []string{"h2", "http/1.1"}) && !c.EvidenceServer && c.Listen == ":8443" && c.TXTPrefix == "_tapp-address"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig(nil, lookupMap(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.want(c) {
				t.Fatalf("parsed to %+v", c)
			}
		})
	}
}

// TestHelp checks that --help documents every option with its variable and
// default, on stdout, with exit status 0.
func TestHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, lookupMap(nil), &out, &errb, nil); code != 0 || errb.Len() != 0 {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	help := out.String()
	flat := strings.Join(strings.Fields(help), " ")
	for _, g := range groups {
		for _, o := range g.opts {
			if o.flag != "" && !strings.Contains(help, "--"+o.flag) {
				t.Errorf("--help lacks --%s", o.flag)
			}
			if o.env != "" && !strings.Contains(help, o.env) {
				t.Errorf("--help lacks %s", o.env)
			}
			if o.def != "" && o.def != "false" && !strings.Contains(flat, "default "+o.def) {
				t.Errorf("--help lacks the default of %s (%s)", o.flag+o.env, o.def)
			}
		}
	}
	for _, want := range []string{"CLOUDFLARE_API_TOKEN", "AWS_SECRET_ACCESS_KEY", "RFC2136_TSIG_SECRET", "Examples:", "ingress --dev"} {
		if !strings.Contains(help, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	for _, line := range strings.Split(help, "\n") {
		if len(line) > usageWidth {
			t.Errorf("help line longer than %d characters: %q", usageWidth, line)
		}
	}
}

// TestSecretsNotInHelpOrErrors: a secret given as a flag value never exists
// (no flag carries one), and help never shows values from the environment.
func TestSecretsNotInHelpOrErrors(t *testing.T) {
	var out bytes.Buffer
	run(context.Background(), []string{"-h"}, lookupMap(map[string]string{"CLOUDFLARE_API_TOKEN": "sekret-value", "ACME_EAB_HMAC": "sekret-value"}), &out, &out, nil)
	if strings.Contains(out.String(), "sekret-value") {
		t.Fatal("help shows a secret")
	}
	for _, g := range groups {
		for _, o := range g.opts {
			if o.secret && o.flag != "" {
				t.Errorf("secret %s has a flag (visible in ps)", o.env)
			}
		}
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"10s": 10 * time.Second, "86400s": 86400 * time.Second, "86400": 86400 * time.Second,
		"1m": time.Minute, "1d": 24 * time.Hour, "100ms": 100 * time.Millisecond, "1h30m": 90 * time.Minute} {
		if got, err := parseDuration(in); err != nil || got != want {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "s", "1x", "1.5d", "d", "-1d", "99999999999"} {
		if _, err := parseDuration(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

func TestCovers(t *testing.T) {
	for _, tc := range []struct {
		name, host string
		want       bool
	}{
		{"a.example.com", "a.example.com", true},
		{"*.example.com", "a.example.com", true},
		{"*.example.com", "*.example.com", true},
		{"*.example.com", "a.b.example.com", false},
		{"*.example.com", "example.com", false},
		{"a.example.com", "*.example.com", false},
	} {
		if got := covers(tc.name, tc.host); got != tc.want {
			t.Errorf("covers(%q, %q) = %v", tc.name, tc.host, got)
		}
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{"/tmp/a-b_c.pem": "/tmp/a-b_c.pem", "/tmp/a b": "'/tmp/a b'", "it's": `'it'\''s'`, "": "''"} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzParseConfig: any value of any variable is accepted or refused with one
// line, never a panic, and a refusal never contains the value of a secret.
func FuzzParseConfig(f *testing.F) {
	f.Add("ROUTING_MAP", "a.example.com=b:1\n*.example.com=c:2")
	f.Add("TIMEOUT_CLIENT", "1d")
	f.Add("DOMAINS", "# c\nx.example.com,,y.example.com")
	f.Add("PORT", "0")
	f.Add("CLOUDFLARE_API_TOKEN", "tok en")
	f.Add("ACME_EAB_HMAC", "====")
	f.Add("DNS_RESOLVERS", "[::1]:53,1.1.1.1")
	f.Fuzz(func(t *testing.T, name, value string) {
		env := map[string]string{"DOMAIN": "app.example.com", "TARGET_ENDPOINT": "app:80", "CLOUDFLARE_API_TOKEN": "fuzz-token-xyz", "ACME_EAB_KID": "k", "ACME_EAB_HMAC": "c2VjcmV0"}
		env[name] = value
		_, err := parseConfig(nil, lookupMap(env))
		if err == nil {
			return
		}
		if _, ok := err.(*configError); !ok {
			t.Fatalf("%s=%q: error of type %T: %v", name, value, err, err)
		}
		msg := err.Error()
		if strings.Contains(msg, "\n") {
			t.Fatalf("%s=%q: multi-line error %q", name, value, msg)
		}
		// The value is trimmed as the parser trims it; an all-space value is
		// "unset" and its spaces are in any message.
		secret := strings.TrimSpace(value)
		if (name == "CLOUDFLARE_API_TOKEN" || name == "ACME_EAB_HMAC") && len(secret) >= 6 && strings.Contains(msg, secret) {
			t.Fatalf("%s=%q: the error echoes the secret: %q", name, value, msg)
		}
	})
}

// TestJSONLogs: LOG_FORMAT=json writes one JSON object per line.
func TestJSONLogs(t *testing.T) {
	cert, key, _ := selfSignedFiles(t, "app.test")
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncbuf.Buffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--cert-source", "static", "--cert", cert, "--key", key, "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9"},
			lookupMap(map[string]string{"LOG_FORMAT": "json"}), &bytes.Buffer{}, logs, nil)
	}()
	waitFor(t, "a listening line", 20*time.Second, func() bool { return strings.Contains(logs.String(), `"msg":"listening"`) }, logs.String)
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil || v["msg"] == nil || v["level"] == nil {
			t.Fatalf("not a JSON log line: %q", line)
		}
	}
}

// TestBareRunPointsToHelp: with nothing configured the error is followed by
// one hint naming --help (and --dev where it is built); with anything
// configured the error stays one line.
func TestBareRunPointsToHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), nil, lookupMap(nil), &out, &errb, nil); code != 2 {
		t.Fatalf("exit %d", code)
	}
	lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[1], "hint: nothing is configured; ingress --help") || !strings.Contains(lines[1], "ingress --dev") {
		t.Fatalf("stderr:\n%s", errb.String())
	}
	errb.Reset()
	run(context.Background(), nil, lookupMap(map[string]string{"DOMAIN": "app.example.com"}), &out, &errb, nil)
	if strings.Contains(errb.String(), "hint: nothing is configured") {
		t.Fatalf("a configured run got the first-run hint:\n%s", errb.String())
	}
}

// TestProductionHelpHasNoDev: the image's build (-tags nodev) does not offer
// --dev or a test hook in --help, nor --dev in the first-run hint; a test
// hook set for it is refused by name, not silently ignored.
func TestProductionHelpHasNoDev(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "ingress")
	if out, err := exec.Command("go", "build", "-tags", "nodev", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build -tags nodev: %v\n%s", err, out)
	}
	help, err := exec.Command(bin, "--help").Output()
	if err != nil || !strings.Contains(string(help), "--cert-source") || strings.Contains(string(help), "--dev") ||
		strings.Contains(string(help), "CLOUDFLARE_API_URL") || strings.Contains(string(help), "--replicas") {
		t.Fatalf("--help of the nodev build (%v):\n%s", err, help)
	}
	hook := exec.Command(bin)
	hook.Env = []string{"DOMAIN=app.example.com", "TARGET_ENDPOINT=127.0.0.1:80", "CLOUDFLARE_API_TOKEN=x", "CLOUDFLARE_API_URL=https://127.0.0.1:1/client/v4"}
	msg, err := hook.CombinedOutput()
	if code := exitCode(err); code != 2 || !strings.Contains(string(msg), "CLOUDFLARE_API_URL is a test hook and not in this build") {
		t.Fatalf("nodev build with CLOUDFLARE_API_URL: exit %d:\n%s", code, msg)
	}
	cmd := exec.Command(bin)
	cmd.Env = []string{}
	msg, _ = cmd.CombinedOutput()
	if !strings.Contains(string(msg), "hint: nothing is configured") || strings.Contains(string(msg), "--dev") {
		t.Fatalf("bare run of the nodev build:\n%s", msg)
	}
}

// TestParseCluster: what good CLUSTER_* settings become.
func TestParseCluster(t *testing.T) {
	cert, key, _ := selfSignedFiles(t, "etcd.test")
	base := map[string]string{"DOMAIN": "app.example.com", "TARGET_ENDPOINT": "app:80", "CLOUDFLARE_API_TOKEN": "x"}
	with := func(extra map[string]string) *Config {
		t.Helper()
		env := maps.Clone(base)
		maps.Copy(env, extra)
		c, err := parseConfig(nil, lookupMap(env))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if c := with(nil); c.Cluster.Enabled() {
		t.Fatal("a single instance has a cluster")
	}
	c := with(map[string]string{"CLUSTER_STORE": "etcd://10.0.0.1:2379, etcd2:2379"})
	if !slices.Equal(c.Cluster.Endpoints, []string{"http://10.0.0.1:2379", "http://etcd2:2379"}) || c.Cluster.TLS != nil || c.Cluster.Prefix != "" {
		t.Fatalf("plain: %+v", c.Cluster)
	}
	c = with(map[string]string{"CLUSTER_STORE": "etcd://etcd:2379", "CLUSTER_ETCD_CA": cert, "CLUSTER_ETCD_CERT": cert,
		"CLUSTER_ETCD_KEY": key, "CLUSTER_PREFIX": "/apps/one/", "CLUSTER_ETCD_USER": "u", "CLUSTER_ETCD_PASSWORD": "p"})
	if c.Cluster.Endpoints[0] != "https://etcd:2379" || c.Cluster.TLS == nil || len(c.Cluster.TLS.Certificates) != 1 ||
		c.Cluster.TLS.RootCAs == nil || c.Cluster.Prefix != "/apps/one/" || c.Cluster.Username != "u" || c.Cluster.Password != "p" {
		t.Fatalf("tls: %+v", c.Cluster)
	}
}

// exitCode is a finished command's exit status (0 for a nil error, -1 if it
// did not run).
func exitCode(err error) int {
	var ee *exec.ExitError
	if err == nil {
		return 0
	}
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// TestFieldNames: every library field cmd/ingress renames exists in that
// library's config, and every new name is a variable of the option table
// (or, for the app id, says where it comes from).
func TestFieldNames(t *testing.T) {
	envs := map[string]bool{}
	for _, g := range groups {
		for _, o := range g.opts {
			envs[o.env] = true
		}
	}
	for _, c := range []struct {
		typ   reflect.Type
		names map[string]string
	}{
		{reflect.TypeFor[proxy.Config](), proxyFields},
		{reflect.TypeFor[dnscaa.PlanConfig](), planFields},
		{reflect.TypeFor[acme.Config](), acmeFields},
		{reflect.TypeFor[dnscaa.ChallengeOptions](), challengeFields},
		{reflect.TypeFor[clusterstore.Options](), clusterFields},
		{reflect.TypeFor[dnssetup.Waiter](), map[string]string{"Resolvers": setupFields["Resolvers"]}},
		{reflect.TypeFor[dnssetup.Webhook](), map[string]string{"Token": setupFields["Token"]}},
	} {
		for field, name := range c.names {
			if _, ok := c.typ.FieldByName(field); !ok {
				t.Errorf("%s has no field %s", c.typ, field)
			}
			if !envs[name] && !strings.Contains(name, "guest agent") {
				t.Errorf("%s.%s is renamed %q, which is not a variable of the option table", c.typ, field, name)
			}
		}
	}
	err := fielderr.Rename(fmt.Errorf("x: %w", &fielderr.Error{Field: "Routes", Value: "a=b"}), proxyFields)
	if err.Error() != `ROUTING_MAP="a=b" is not valid` {
		t.Errorf("renamed: %v", err)
	}
}
