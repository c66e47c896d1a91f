package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"github.com/tee-ingress/tee-ingress/internal/fielderr"
	"io"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tee-ingress/tee-ingress/acme"
	"github.com/tee-ingress/tee-ingress/dnscaa"
	"github.com/tee-ingress/tee-ingress/dnsread"
	"github.com/tee-ingress/tee-ingress/internal/dnsname"
	"github.com/tee-ingress/tee-ingress/proxy"
)

// Certificate sources (CERT_SOURCE).
const (
	sourceACME       = "acme"
	sourceStatic     = "static"
	sourceSelfSigned = "self-signed"
)

// Account key sources (ACME_ACCOUNT_KEY).
const (
	keyAuto = "auto"
	keyKMS  = "kms"
	keyFile = "file"
)

// Config is every setting of the daemon, resolved from flags over environment
// variables over defaults and validated. Zero values are what the defaults
// documented in the usage text become; parseConfig never returns a Config
// that fails validation.
type Config struct {
	// Dev is --dev: everything local, no TEE (dev.go). Only DevArgs is set
	// then: the flags given besides --dev, which dev.go parses again over
	// its own environment.
	Dev     bool
	DevArgs []string

	// CertSource is acme, static or self-signed.
	CertSource string
	// Domains are DOMAIN then DOMAINS, lowercase, without duplicates. Empty
	// only with the static and self-signed sources.
	Domains []string
	// Primary is Domains[0]: its chain is cert.pem in the evidence, and its
	// certificate goes to clients sending no or an unknown server name.
	Primary string
	// Groups are the certificates: each lists the names one certificate
	// covers, its first name first (DOMAIN's group is Groups[0]). Every name
	// of Domains is in exactly one group.
	Groups [][]string

	// Listen is the listen address; Port its port (0 when --listen asks for
	// any port: the port actually bound is published then).
	Listen string
	Port   int
	// Mode, Default, Routes, ALPN, ProxyProtocol, MaxConns and the timeouts
	// are handed to package proxy as they are.
	Mode          proxy.Mode
	Default       proxy.Target
	Routes        []proxy.Route
	ALPN          []string
	ProxyProtocol bool
	// ProxyProtocolIn is auto, on or off (PROXY_PROTOCOL_IN); auto is
	// decided at start from the app compose (proxyProtocolIn).
	ProxyProtocolIn   string
	ProxyProtocolFrom []netip.Prefix
	// KeepUnderscoreHeaders forwards header names with '_' (http mode).
	KeepUnderscoreHeaders bool
	// AccessLog logs one line per HTTP request (http mode).
	AccessLog      bool
	MaxConns       int
	ConnectTimeout time.Duration
	ClientTimeout  time.Duration
	ServerTimeout  time.Duration
	// DrainTimeout bounds how long open connections may finish after SIGTERM.
	DrainTimeout time.Duration

	// CertFile and KeyFile are the static source's PEM files; StaticCert is
	// what they hold, loaded during validation.
	CertFile, KeyFile string
	StaticCert        *tls.Certificate
	// RATLS: the self-signed certificate is dstack's RA-TLS form.
	RATLS bool

	// Challenge is dns-01 or tls-alpn-01.
	Challenge acme.ChallengeType
	// Directory is the ACME directory URL.
	Directory string
	// Email is the optional ACME account contact ("" = none).
	Email string
	// EAB is the external account binding, nil when not configured.
	EAB *acme.EAB
	// AccountKey is auto, kms or file.
	AccountKey string
	// CARoots are extra roots trusted for the ACME server's HTTPS (nil: the
	// system's only); CARootsFile is where they came from.
	CARoots     *x509.CertPool
	CARootsFile string
	// RenewBefore is RENEW_DAYS_BEFORE; zero follows ARI or a third of the
	// lifetime.
	RenewBefore time.Duration
	// StateDir holds the account, keys and certificates.
	StateDir string

	// GatewayDomain, TXTPrefix, SetCAA, DelegationZone and DNSZone shape the
	// DNS records (package dnscaa). GatewayDomain "" plans no gateway
	// records.
	GatewayDomain  string
	TXTPrefix      string
	SetCAA         bool
	DelegationZone string
	DNSZone        string
	// DNSResolvers ("host:port") answer lookups and propagation checks;
	// empty: /etc/resolv.conf and the zone's authoritative servers.
	DNSResolvers []string
	// DNS is the DNS provider, nil when none is configured (allowed only
	// with tls-alpn-01 and without SET_CAA); DNSProvider is its
	// configuration, for the daemon to build it again with its logger.
	DNS         *dnscaa.Client
	DNSProvider dnscaa.ProviderConfig

	// DNSSetup is DNS_SETUP_MODE and its settings.
	DNSSetup DNSSetup

	// Cluster is CLUSTER_*; the zero value means a single instance.
	Cluster ClusterConfig

	// EvidenceDir is where the bundle is written ("" = memory only).
	EvidenceDir string
	// EvidenceServer serves /evidences/ on the TLS port.
	EvidenceServer bool

	// MetricsListen serves /metrics, /healthz and /readyz ("" = off).
	MetricsListen string
	// LogJSON selects JSON logs; LogLevel the least severe level logged.
	LogJSON  bool
	LogLevel string
	// SimulatorEndpoint is DSTACK_SIMULATOR_ENDPOINT ("" = the real agent).
	SimulatorEndpoint string
	// Warnings are logged at start: dstack-ingress variables that are set
	// but have no effect here.
	Warnings []string
}

// ignoredVars are dstack-ingress settings with no equivalent here, with what
// to do instead. Setting one is worth a warning, not a refusal: the
// behaviour they tuned is built in or not needed.
var ignoredVars = []struct{ name, why string }{
	{"ROUTE53_INITIAL_WEIGHT", "weighted Route 53 records are not supported"},
	{"TLSALPN_PORT", "tls-alpn-01 is answered on the listen port itself"},
	{"TLS_TERMINATE_PORT", "tls-alpn-01 is answered on the listen port itself"},
	{"RENEW_INTERVAL", "renewal follows the CA's ARI window, rechecked every six hours"},
	{"DNS_SETTLE_SECONDS", "propagation is polled, not waited for"},
	{"DELEGATION_PROPAGATION_SECONDS", "propagation is polled, not waited for"},
	{"CERTBOT_TIMEOUT", "every CA and DNS call has its own deadline"},
	{"EVIDENCE_PORT", "evidence is served on the TLS port by the ingress itself (EVIDENCE_SERVER)"},
	{"DETERMINISTIC_TLS_KEY", "certificate keys are generated inside the TEE; the ACME account key is KMS-derived (ACME_ACCOUNT_KEY)"},
	{"CLIENT_MAX_BODY_SIZE", "not an L7 proxy setting here"},
	{"PROXY_READ_TIMEOUT", "use TIMEOUT_SERVER"},
	{"PROXY_SEND_TIMEOUT", "use TIMEOUT_CLIENT"},
	{"PROXY_CONNECT_TIMEOUT", "use TIMEOUT_CONNECT"},
	{"PROXY_BUFFER_SIZE", "not needed"},
	{"PROXY_BUFFERS", "not needed"},
	{"PROXY_BUSY_BUFFERS_SIZE", "not needed"},
}

// option is one setting: a flag, an environment variable, or both.
type option struct {
	flag    string   // name without dashes; "" = environment only
	env     string   // "" = flag only
	aliases []string // older environment names, tried after env
	def     string
	arg     string // placeholder in the usage text; "" marks a boolean flag
	help    string
	secret  bool // value never printed
	devOnly bool // not in production builds (-tags nodev): --dev and test hooks
}

// options is the usage text's order. Grouped by the headings in groups.
var groups = []struct {
	title string
	opts  []option
}{
	{"Domains and backends", []option{
		{flag: "domain", env: "DOMAIN", arg: "NAME", help: "primary domain; *.example.com allowed with dns-01"},
		{flag: "domains", env: "DOMAINS", arg: "LIST", help: "more certificates, one per line or comma-separated; names separated by spaces share one certificate; # starts a comment"},
		{flag: "alias-domain", env: "ALIAS_DOMAIN", arg: "NAMES", help: "more names on DOMAIN's certificate, space- or comma-separated (dstack-ingress's ALIAS_DOMAIN)"},
		{flag: "target", env: "TARGET_ENDPOINT", arg: "URL", help: "default backend host:port; http://, https://, grpc://, h2c://, tcp:// prefixes accepted"},
		{flag: "routing-map", env: "ROUTING_MAP", arg: "MAP", help: "per-domain backends, domain=host:port per line or comma; *.example.com keys match one label; with CERT_SOURCE=acme every key must be a configured domain or under a wildcard one"},
		{flag: "listen", env: "PORT", def: ":443", arg: "ADDR", help: "listen address; PORT=n means :n"},
		{flag: "mode", env: "PROXY_MODE", def: "tcp", arg: "MODE", help: "tcp (L4, any protocol) or http (L7: h1, h2, websockets, gRPC)"},
		{flag: "alpn", env: "ALPN", arg: "LIST", help: "ALPN protocols offered, comma-separated (tcp mode: the backend must speak them)"},
		{flag: "proxy-protocol", env: "PROXY_PROTOCOL", def: "false", help: "send a PROXY protocol v2 header to backends (tcp mode)"},
		{flag: "proxy-protocol-in", env: "PROXY_PROTOCOL_IN", def: "auto", arg: "MODE", help: "read the gateway's PROXY protocol header (v2 or v1) before TLS and use its client address: auto (when the app compose's port_policy marks this port pp), on, off"},
		{flag: "proxy-protocol-from", env: "PROXY_PROTOCOL_FROM", arg: "CIDRS", help: "peers allowed to send that header, comma-separated CIDRs (default: any; in dstack only the gateway reaches the port)"},
		{flag: "access-log", env: "ACCESS_LOG", def: "false", help: "log one line per HTTP request at info level (http mode: method, host, path without query, status, bytes, duration, backend, client); tcp mode logs connections at debug level"},
		{flag: "underscores-in-headers", env: "UNDERSCORES_IN_HEADERS", def: "false", help: "forward request header names with '_' (http mode; dropped by default, as nginx does)"},
		{flag: "maxconn", env: "MAXCONN", def: "4096", arg: "N", help: "most client connections open at once"},
		{flag: "timeout-connect", env: "TIMEOUT_CONNECT", def: "10s", arg: "D", help: "backend dial timeout"},
		{flag: "timeout-client", env: "TIMEOUT_CLIENT", def: "86400s", arg: "D", help: "client inactivity timeout"},
		{flag: "timeout-server", env: "TIMEOUT_SERVER", def: "86400s", arg: "D", help: "backend inactivity timeout"},
		{flag: "drain-timeout", env: "DRAIN_TIMEOUT", def: "10s", arg: "D", help: "on SIGTERM, how long open connections may finish"},
	}},
	{"Certificates", []option{
		{flag: "cert-source", env: "CERT_SOURCE", def: "acme", arg: "SRC", help: "acme, static (--cert/--key) or self-signed (attested, GET /attestation)"},
		{flag: "self-signed-format", env: "SELF_SIGNED_FORMAT", def: "plain", arg: "FMT", help: "self-signed: plain (attested through GET /attestation), or ra-tls (dstack's RA-TLS: the attestation in the certificate, OID 1.3.6.1.4.1.62397.1.8; /attestation too)"},
		{flag: "cert", env: "CERT_FILE", arg: "FILE", help: "static: certificate chain, PEM, leaf first"},
		{flag: "key", env: "KEY_FILE", arg: "FILE", help: "static: private key, PEM"},
		{flag: "challenge", env: "CHALLENGE_TYPE", def: "dns-01", arg: "TYPE", help: "dns-01, tls-alpn-01 (answered on the listen port; no wildcards) or dns-persist-01 (one standing TXT record per name authorises this account: no DNS credential in the TEE)"},
		{flag: "acme-directory", env: "ACME_DIRECTORY", arg: "URL", help: "ACME directory (https); default Let's Encrypt production"},
		{flag: "acme-staging", env: "ACME_STAGING", aliases: []string{"CERTBOT_STAGING"}, def: "false", help: "use Let's Encrypt staging"},
		{flag: "acme-email", env: "ACME_EMAIL", aliases: []string{"CERTBOT_EMAIL"}, arg: "ADDR", help: "optional account contact; it is published in acme-account.json"},
		{env: "ACME_EAB_KID", arg: "KID", help: "external account binding key id, for CAs that need one"},
		{env: "ACME_EAB_HMAC", arg: "KEY", help: "external account binding MAC key, base64url", secret: true},
		{flag: "account-key", env: "ACME_ACCOUNT_KEY", def: "auto", arg: "SRC", help: "kms (derived from the dstack KMS: same account for every instance), file, or auto (kms when a guest agent is found)"},
		{flag: "acme-ca-roots", env: "ACME_CA_ROOTS", arg: "FILE", help: "extra PEM roots trusted for the ACME server's HTTPS (a private CA)"},
		{flag: "renew-days", env: "RENEW_DAYS_BEFORE", arg: "N", help: "renew N days before expiry; default: the CA's ARI window, else a third of the lifetime left"},
		{flag: "state-dir", env: "STATE_DIR", def: "/etc/letsencrypt", arg: "DIR", help: "account, keys and certificates"},
	}},
	{"Replicas (instances of one app sharing certificates)", []option{
		{flag: "cluster-store", env: "CLUSTER_STORE", arg: "URL", help: "etcd://host:2379[,host:2379...]: share certificates, challenges and history with the other instances through etcd, values sealed with a KMS key; one instance orders; unset: a single instance"},
		{flag: "cluster-prefix", env: "CLUSTER_PREFIX", arg: "KEY", help: "etcd key prefix; default /tee-ingress/<app_id>/"},
		{env: "CLUSTER_ETCD_CA", arg: "FILE", help: "PEM roots for etcd's TLS (setting this or a client certificate turns TLS on)"},
		{env: "CLUSTER_ETCD_CERT", arg: "FILE", help: "client certificate for etcd, PEM"},
		{env: "CLUSTER_ETCD_KEY", arg: "FILE", help: "client key for etcd, PEM"},
		{env: "CLUSTER_ETCD_USER", arg: "NAME", help: "etcd user"},
		{env: "CLUSTER_ETCD_PASSWORD", arg: "PASS", help: "etcd password", secret: true},
	}},
	{"DNS", []option{
		{flag: "gateway-domain", env: "GATEWAY_DOMAIN", arg: "NAME", help: "CNAME target of each domain, e.g. _.dstack-prod5.phala.network; also writes the routing TXT"},
		{flag: "set-caa", env: "SET_CAA", def: "false", help: "write CAA records pinning issuance to this ACME account"},
		{flag: "txt-prefix", env: "TXT_PREFIX", def: "_dstack-app-address", arg: "LABEL", help: "label of the gateway routing TXT record"},
		{flag: "dns-provider", env: "DNS_PROVIDER", def: "auto", arg: "NAME", help: "cloudflare, route53, linode, namecheap, rfc2136; auto = the first whose credentials are set"},
		{flag: "delegation-zone", env: "DELEGATION_ZONE", arg: "ZONE", help: "write every record into this zone instead (least-privilege token; the operator CNAMEs into it)"},
		{flag: "dns-zone", env: "DNS_ZONE", arg: "ZONE", help: "the provider zone holding the records; default: found from the provider's zones"},
		{flag: "dns-resolvers", env: "DNS_RESOLVERS", arg: "LIST", help: "DNS servers host:port for lookups and propagation checks; default: /etc/resolv.conf and the zone's authoritative servers"},
		{flag: "dns-setup-mode", env: "DNS_SETUP_MODE", arg: "MODE", help: "api (write records with the DNS provider; the default with credentials), print (print them, go on), wait (print, then wait until visible; the default without credentials), webhook (post them to DNS_WEBHOOK_URL, then wait)"},
		{env: "DNS_SETUP_TIMEOUT", def: "1800s", arg: "D", help: "wait/webhook: how long to wait for the records"},
		{env: "DNS_SETUP_INTERVAL", def: "15s", arg: "D", help: "wait/webhook: time between checks"},
		{env: "DOH_RESOLVERS", def: defaultDoH, arg: "LIST", help: "DNS-over-HTTPS resolvers (RFC 8484) every record must be visible on; DNS_RESOLVERS are used instead when set and this is not"},
		{env: "DNS_WEBHOOK_URL", arg: "URL", help: "webhook: the endpoint that creates the records (dstack-ingress's signed, attested envelope)"},
		{env: "DNS_WEBHOOK_TOKEN", arg: "KEY", help: "webhook: HMAC-SHA256 key the endpoint checks", secret: true},
		{env: "DNS_WEBHOOK_TIMEOUT", def: "15s", arg: "D", help: "webhook: timeout of one attempt (5 attempts, backoff from 1 s)"},
	}},
	{"Evidence", []option{
		{flag: "evidence-dir", env: "EVIDENCE_DIR", def: "/evidences", arg: "DIR", help: "evidence files on disk (a volume shared with the app); empty: memory only"},
		{flag: "evidence-server", env: "EVIDENCE_SERVER", def: "true", help: "serve /evidences/ on the TLS port"},
	}},
	{"Observability", []option{
		{flag: "metrics-listen", env: "METRICS_LISTEN", arg: "ADDR", help: "serve Prometheus /metrics, /healthz and /readyz on this address"},
		{flag: "log-format", env: "LOG_FORMAT", def: "text", arg: "FMT", help: "text or json"},
		{flag: "log-level", env: "LOG_LEVEL", def: "info", arg: "LEVEL", help: "debug, info, warn or error"},
	}},
	{"Development and tests (never needed in production)", []option{
		{flag: "dev", devOnly: true, def: "false", help: "run everything locally: ACME CA, DNS, Cloudflare API, guest-agent simulator, demo backend; NOT A TEE"},
		{flag: "replicas", devOnly: true, def: "1", arg: "N", help: "with --dev: run N instances of the app (1-10) on consecutive ports from --listen, sharing certificates through an embedded etcd"},
		{env: "DSTACK_SIMULATOR_ENDPOINT", arg: "PATH", help: "use a dstack simulator's socket instead of the guest agent (logged loudly: NOT A TEE)"},
		{env: "CLOUDFLARE_API_URL", devOnly: true, arg: "URL", help: "send Cloudflare API calls to this base URL instead of https://api.cloudflare.com/client/v4 (a test hook: not in production builds)"},
		{env: "CLOUDFLARE_API_CA", devOnly: true, arg: "FILE", help: "PEM roots trusted for CLOUDFLARE_API_URL"},
	}},
}

// usageHead and usageTail frame the generated option list.
const usageHead = `usage: ingress [flags]
       ingress records [flags]   print the DNS records this configuration needs, as JSON (asks the
                                 guest agent and the CA who this is; writes nothing, orders nothing)

Obtains certificates for the app's domains (ACME DNS-01 or TLS-ALPN-01), writes
the DNS records that route them through the dstack gateway and pin issuance to
this TEE's ACME account, terminates TLS inside the TEE, forwards to the app, and
publishes evidence (the certificates and a TDX quote binding them) at /evidences/.

Every setting is a flag and an environment variable (in brackets; names as in
dstack-ingress). A flag wins over its variable; a variable set to "" counts as
unset. Durations: Go form (10s, 1m30s, 24h), HAProxy's d suffix (1d), or a bare
number of seconds (86400).
`

const usageTail = `
DNS provider credentials (environment only, never logged):
%s
Examples:
  DOMAIN=app.example.com TARGET_ENDPOINT=app:80 GATEWAY_DOMAIN=_.dstack-prod5.phala.network \
    SET_CAA=true CLOUDFLARE_API_TOKEN=... ingress
  ingress --cert-source static --cert cert.pem --key key.pem --listen :8443 --target app:8080
  ingress --cert-source self-signed --target app:8080
%s
Exit status: 0 after SIGTERM and a drain, 1 on a failure at run time, 2 on bad configuration.
`

// usageWidth is the widest line of the usage text.
const usageWidth = 100

// wrap breaks s into lines of at most width characters at spaces.
func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return append(lines, line)
}

func usageText() string {
	var b strings.Builder
	b.WriteString(usageHead)
	for _, g := range groups {
		fmt.Fprintf(&b, "\n%s:\n", g.title)
		for _, o := range g.opts {
			if o.devOnly && !devBuilt {
				continue
			}
			left := "  "
			if o.flag != "" {
				left += "--" + o.flag
				if o.arg != "" {
					left += " " + o.arg
				}
			} else {
				left += o.env + "=" + o.arg
			}
			var meta []string
			if o.flag != "" && o.env != "" {
				meta = append(meta, o.env)
			}
			meta = append(meta, o.aliases...)
			help := o.help
			if o.def != "" && !(o.arg == "" && o.def == "false") {
				help += "; default " + o.def
			}
			if len(meta) > 0 {
				help += " [" + strings.Join(meta, ", ") + "]"
			}
			lines := wrap(help, usageWidth-26)
			if len(left) >= 26 {
				fmt.Fprintf(&b, "%s\n", left)
			} else {
				fmt.Fprintf(&b, "%-26s%s\n", left, lines[0])
				lines = lines[1:]
			}
			for _, l := range lines {
				fmt.Fprintf(&b, "%26s%s\n", "", l)
			}
		}
	}
	var creds strings.Builder
	for _, p := range dnscaa.Providers() {
		req, opt := dnscaa.ProviderVariables(p)
		text := strings.Join(req, " ")
		if len(opt) > 0 {
			text += " (optional: " + strings.Join(opt, " ") + ")"
		}
		for i, l := range wrap(text, usageWidth-14) {
			if i == 0 {
				fmt.Fprintf(&creds, "  %-12s%s\n", p, l)
			} else {
				fmt.Fprintf(&creds, "%14s%s\n", "", l)
			}
		}
	}
	devExample := ""
	if devBuilt {
		devExample = "  ingress --dev                      # local demo; prints the verifycli and curl commands\n"
	}
	fmt.Fprintf(&b, usageTail, creds.String(), devExample)
	return b.String()
}

// configError is bad configuration: exit status 2 with its one-line message.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

func configErrorf(format string, a ...any) error {
	return &configError{msg: fmt.Sprintf(format, a...)}
}

// boolFlag lets a boolean option be given as --set-caa alone.
type strValue struct {
	s      *string
	isBool bool
}

func (v strValue) String() string {
	if v.s == nil {
		return ""
	}
	return *v.s
}
func (v strValue) Set(s string) error { *v.s = s; return nil }
func (v strValue) IsBoolFlag() bool   { return v.isBool }

// nothingSet reports whether the command line is empty and no variable of
// ours is in the environment: a first run, which gets pointed at --help.
func nothingSet(args []string, lookup func(string) (string, bool)) bool {
	if len(args) > 0 {
		return false
	}
	for _, g := range groups {
		for _, o := range g.opts {
			for _, name := range append([]string{o.env}, o.aliases...) {
				if v, ok := lookup(name); name != "" && ok && v != "" {
					return false
				}
			}
		}
	}
	return true
}

// errHelp is returned by parseConfig for --help.
var errHelp = flag.ErrHelp

// settings resolves raw option values: a set flag, else the variable or one
// of its aliases, else the default; src names what to blame in errors.
type settings struct {
	byName map[string]*option
	vals   map[string]*string
	set    map[string]bool
	lookup func(string) (string, bool)
}

func (s *settings) get(name string) (val, src string) {
	o := s.byName[name]
	if s.set[name] {
		return *s.vals[name], "--" + o.flag
	}
	for _, e := range append([]string{o.env}, o.aliases...) {
		if e == "" {
			continue
		}
		if v, ok := s.lookup(e); ok && strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v), e
		}
	}
	if o.flag != "" {
		return o.def, "--" + o.flag
	}
	return o.def, o.env
}

// given reports whether the option was set by its flag or a variable.
func (s *settings) given(name string) bool {
	if s.set[name] {
		return true
	}
	o := s.byName[name]
	for _, e := range append([]string{o.env}, o.aliases...) {
		if v, ok := s.lookup(e); e != "" && ok && strings.TrimSpace(v) != "" {
			return true
		}
	}
	return false
}

func (s *settings) boolean(name string) (bool, error) {
	v, src := s.get(name)
	switch strings.ToLower(v) {
	case "1", "t", "true", "yes", "on":
		return true, nil
	case "0", "f", "false", "no", "off":
		return false, nil
	}
	return false, bad(src, v, "true or false")
}

func bad(src, val, want string) error {
	return configErrorf("%s=%q is not valid: want %s", src, val, want)
}

// newFlagSet declares every option with a flag, and indexes all of them by
// flag or variable name for settings.get.
func newFlagSet(lookup func(string) (string, bool)) (*flag.FlagSet, *settings) {
	fs := flag.NewFlagSet("ingress", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	s := &settings{byName: map[string]*option{}, vals: map[string]*string{}, set: map[string]bool{}, lookup: lookup}
	for gi := range groups {
		for oi := range groups[gi].opts {
			o := &groups[gi].opts[oi]
			name := o.flag
			if name == "" {
				name = o.env
			} else {
				v := new(string)
				s.vals[name] = v
				fs.Var(strValue{s: v, isBool: o.arg == ""}, name, o.help)
			}
			s.byName[name] = o
		}
	}
	return fs, s
}

// parseConfig resolves and validates every setting. It does no network I/O
// and writes nothing: bad input is reported before anything touches DNS, ACME
// or the disk. A *configError (or errHelp) is bad usage: exit status 2 (0).
func parseConfig(args []string, lookup func(string) (string, bool)) (*Config, error) {
	if lookup == nil {
		lookup = func(string) (string, bool) { return "", false }
	}
	fs, s := newFlagSet(lookup)
	help := fs.Bool("help", false, "")
	fs.BoolVar(help, "h", false, "")
	if err := fs.Parse(args); err != nil {
		msg := err.Error()
		if strings.HasPrefix(msg, "flag provided but not defined: -") {
			msg = "unknown flag --" + strings.TrimPrefix(msg, "flag provided but not defined: -")
		}
		return nil, configErrorf("%s (ingress --help lists the flags)", msg)
	}
	if *help {
		return nil, errHelp
	}
	if fs.NArg() > 0 {
		return nil, configErrorf("unexpected argument %q (every setting is a --flag or a variable; ingress --help lists them)", fs.Arg(0))
	}
	fs.Visit(func(f *flag.Flag) { s.set[f.Name] = true })
	c := &Config{}
	var err error
	if c.Dev, err = s.boolean("dev"); err != nil {
		return nil, err
	}
	if c.Dev {
		return parseDevFlags(s)
	}
	if s.given("replicas") {
		return nil, configErrorf("--replicas needs --dev (in production, each instance runs one ingress; share them with CLUSTER_STORE)")
	}
	if err := parseLogging(s, c); err != nil {
		return nil, err
	}
	if err := parseProxy(s, c); err != nil {
		return nil, err
	}
	if err := parseCerts(s, c); err != nil {
		return nil, err
	}
	if err := parseCluster(s, c); err != nil {
		return nil, err
	}
	if err := parseDNS(s, c); err != nil {
		return nil, err
	}
	if err := parseEvidence(s, c); err != nil {
		return nil, err
	}
	if err := checkBackends(c); err != nil {
		return nil, err
	}
	// dstack-ingress renamed ACME_CHALLENGE_ALIAS to DELEGATION_ZONE; a
	// deployment still setting the old name expects its records to stay
	// out of the served zone, so it is refused rather than ignored.
	if v, ok := lookup("ACME_CHALLENGE_ALIAS"); ok && strings.TrimSpace(v) != "" && c.DelegationZone == "" {
		return nil, configErrorf("ACME_CHALLENGE_ALIAS=%q is the old name of DELEGATION_ZONE: rename it (records would otherwise go into the served domain's zone)", v)
	}
	for _, iv := range ignoredVars {
		if v, ok := lookup(iv.name); ok && strings.TrimSpace(v) != "" {
			c.Warnings = append(c.Warnings, iv.name+" is set but has no effect: "+iv.why)
		}
	}
	return c, nil
}

func parseLogging(s *settings, c *Config) error {
	switch v, src := s.get("log-format"); v {
	case "text":
	case "json":
		c.LogJSON = true
	default:
		return bad(src, v, "text or json")
	}
	switch v, src := s.get("log-level"); strings.ToLower(v) {
	case "debug", "info", "warn", "error":
		c.LogLevel = strings.ToLower(v)
	default:
		return bad(src, v, "debug, info, warn or error")
	}
	if v, src := s.get("metrics-listen"); v != "" {
		if err := checkHostPort(v); err != nil {
			return bad(src, v, "an address like 127.0.0.1:9090 or :9090")
		}
		c.MetricsListen = v
	}
	c.SimulatorEndpoint, _ = s.get("DSTACK_SIMULATOR_ENDPOINT")
	return nil
}

func checkHostPort(v string) error {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return errors.New("bad port")
	}
	return nil
}

// parseDuration reads TIMEOUT_* values: Go durations ("10s", "1m30s"),
// HAProxy's day suffix ("1d"), or a bare number of seconds ("86400"; unlike
// HAProxy, where a bare number means milliseconds, which no one deploying
// this wants for a connection timeout).
func parseDuration(v string) (time.Duration, error) {
	if v == "" {
		return 0, errors.New("empty")
	}
	if n, err := strconv.ParseUint(v, 10, 31); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	if strings.HasSuffix(v, "d") {
		n, err := strconv.ParseUint(strings.TrimSuffix(v, "d"), 10, 16)
		if err != nil {
			return 0, err
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(v)
}

func parseProxy(s *settings, c *Config) error {
	v, src := s.get("listen")
	if src == "PORT" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			return bad(src, v, "a port number from 1 to 65535")
		}
		v = ":" + v
	}
	host, port, err := net.SplitHostPort(v)
	n, perr := strconv.Atoi(port)
	if err != nil || perr != nil || n < 0 || n > 65535 {
		return bad(src, v, "an address like :443 or 127.0.0.1:8443")
	}
	_ = host
	c.Listen, c.Port = v, n

	if v, src := s.get("target"); v != "" {
		t, err := proxy.ParseTarget(v)
		if err != nil {
			return configErrorf("%s=%q is not valid: %s", src, v, err)
		}
		c.Default = t
	}
	if v, src := s.get("routing-map"); v != "" {
		routes, err := proxy.ParseRoutingMap(v)
		if err != nil {
			return configErrorf("%s is not valid: %s (want domain=host:port per line or comma)", src, err)
		}
		c.Routes = routes
	}
	mode, src := s.get("mode")
	m, err := proxy.ParseMode(strings.ToLower(mode))
	if err != nil {
		return bad(src, mode, "tcp or http")
	}
	c.Mode = m
	if m == proxy.ModeHTTP && c.Default.Scheme == proxy.SchemeTCP {
		return configErrorf("TARGET_ENDPOINT=%q is a tcp:// backend but PROXY_MODE is http: use http://, https://, h2c:// or grpc://, or PROXY_MODE=tcp", c.Default.String())
	}
	for _, r := range c.Routes {
		if m == proxy.ModeHTTP && r.Target.Scheme == proxy.SchemeTCP {
			return configErrorf("ROUTING_MAP entry %s=%s is a tcp:// backend but PROXY_MODE is http: use http://, h2c:// or grpc://, or PROXY_MODE=tcp", r.Host, r.Target.String())
		}
	}
	if err := parseALPN(s, c); err != nil {
		return err
	}
	if c.ProxyProtocol, err = s.boolean("proxy-protocol"); err != nil {
		return err
	}
	if c.ProxyProtocol && m == proxy.ModeHTTP {
		_, src := s.get("proxy-protocol")
		return configErrorf("%s=true needs PROXY_MODE=tcp (http mode sends X-Forwarded-For instead)", src)
	}
	if err := parseProxyProtocolIn(s, c); err != nil {
		return err
	}
	if c.KeepUnderscoreHeaders, err = s.boolean("underscores-in-headers"); err != nil {
		return err
	}
	if c.AccessLog, err = s.boolean("access-log"); err != nil {
		return err
	}
	return parseLimits(s, c)
}

// parseALPN reads the protocols offered to clients.
func parseALPN(s *settings, c *Config) error {
	if v, src := s.get("alpn"); v != "" {
		for _, p := range strings.Split(v, ",") {
			p = strings.TrimSpace(p)
			if p == "" || len(p) > 255 || strings.ContainsAny(p, " \t") {
				return bad(src, v, "a comma-separated list of protocol names like h2,http/1.1")
			}
			if p == proxy.ALPNChallenge {
				return bad(src, v, "protocols other than acme-tls/1 (that one is reserved for tls-alpn-01)")
			}
			if c.Mode == proxy.ModeHTTP && p != "h2" && p != "http/1.1" {
				return bad(src, v, "h2 and/or http/1.1 in http mode (PROXY_MODE=http speaks only those)")
			}
			c.ALPN = append(c.ALPN, p)
		}
	}
	return nil
}

// parseLimits reads the connection limit and the timeouts.
func parseLimits(s *settings, c *Config) error {
	var err error
	mc, src := s.get("maxconn")
	if c.MaxConns, err = strconv.Atoi(mc); err != nil || c.MaxConns < 1 {
		return bad(src, mc, "a whole number of connections of at least 1, e.g. 4096")
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
	}{
		{"timeout-connect", &c.ConnectTimeout},
		{"timeout-client", &c.ClientTimeout},
		{"timeout-server", &c.ServerTimeout},
		{"drain-timeout", &c.DrainTimeout},
	} {
		v, src := s.get(d.name)
		dur, err := parseDuration(v)
		if err != nil || dur <= 0 {
			return bad(src, v, "a positive duration: 10s, 5m, 1d, or a number of seconds")
		}
		*d.dst = dur
	}
	return nil
}

// splitList splits DOMAINS and DNS_RESOLVERS: newlines or commas, blank
// entries and # comments ignored.
func splitList(v string) []string {
	var out []string
	for _, line := range strings.Split(v, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		for _, f := range strings.Split(line, ",") {
			if f = strings.TrimSpace(f); f != "" {
				out = append(out, f)
			}
		}
	}
	return out
}

// parseCerts reads where certificates come from, then what that source
// needs: one function per source.
func parseCerts(s *settings, c *Config) error {
	src, srcName := s.get("cert-source")
	switch strings.ToLower(src) {
	case sourceACME, sourceStatic, sourceSelfSigned:
		c.CertSource = strings.ToLower(src)
	default:
		return bad(srcName, src, "acme, static or self-signed")
	}
	if err := parseDomains(s, c); err != nil {
		return err
	}
	if err := parseCertCommon(s, c); err != nil {
		return err
	}
	switch c.CertSource {
	case sourceStatic:
		return parseStatic(s, c)
	case sourceSelfSigned:
		if c.CertFile != "" || c.KeyFile != "" {
			return configErrorf("--cert/--key are for CERT_SOURCE=static; CERT_SOURCE=self-signed generates its key inside the TEE")
		}
		return rejectACMEOnly(s, c)
	}
	return parseACME(s, c)
}

// parseDomains reads DOMAIN and DOMAINS; the first is the primary.
func parseDomains(s *settings, c *Config) error {
	if v, vsrc := s.get("domain"); v != "" {
		if strings.ContainsAny(v, ",\n \t") {
			return bad(vsrc, v, "one domain name (list more in DOMAINS, or on its certificate in ALIAS_DOMAIN)")
		}
		d, err := dnscaa.ParseDomain(v)
		if err != nil {
			return configErrorf("%s=%q is not valid: %s", vsrc, v, strings.TrimPrefix(err.Error(), "invalid domain name: "))
		}
		c.Groups = append(c.Groups, []string{d.Name})
	}
	if v, vsrc := s.get("alias-domain"); v != "" {
		if len(c.Groups) == 0 {
			return configErrorf("%s is set but DOMAIN is not: the aliases go on DOMAIN's certificate", vsrc)
		}
		alias, err := parseGroup(vsrc, strings.ReplaceAll(v, ",", " "))
		if err != nil {
			return err
		}
		c.Groups[0] = append(c.Groups[0], alias...)
	}
	if v, vsrc := s.get("domains"); v != "" {
		for _, e := range splitList(v) {
			group, err := parseGroup(vsrc+" entry", e)
			if err != nil {
				return err
			}
			c.Groups = addGroup(c.Groups, group)
		}
	}
	seen := map[string]bool{}
	for _, g := range c.Groups {
		for _, name := range g {
			if seen[name] {
				return configErrorf("%s is on two certificates (DOMAIN, ALIAS_DOMAIN and DOMAINS groups must not share a name)", name)
			}
			seen[name] = true
			c.Domains = append(c.Domains, name)
		}
	}
	if len(c.Domains) > 0 {
		c.Primary = c.Domains[0]
	}
	return nil
}

// parseGroup reads the space-separated names of one certificate.
func parseGroup(src, entry string) ([]string, error) {
	var group []string
	for _, f := range strings.Fields(entry) {
		d, err := dnscaa.ParseDomain(f)
		if err != nil {
			return nil, configErrorf("%s %q is not valid: %s", src, f, strings.TrimPrefix(err.Error(), "invalid domain name: "))
		}
		if slices.Contains(group, d.Name) {
			return nil, configErrorf("%s %q lists %s twice", src, entry, d.Name)
		}
		group = append(group, d.Name)
	}
	return group, nil
}

// addGroup adds a DOMAINS entry. A lone name already configured is skipped,
// as before groups existed (DOMAIN repeated in DOMAINS); a group that
// contains DOMAIN's lone name becomes DOMAIN's certificate, DOMAIN first.
func addGroup(groups [][]string, g []string) [][]string {
	for i, have := range groups {
		if len(g) == 1 && slices.Contains(have, g[0]) {
			return groups
		}
		if i == 0 && len(have) == 1 && slices.Contains(g, have[0]) {
			rest := slices.DeleteFunc(slices.Clone(g), func(n string) bool { return n == have[0] })
			groups[0] = append([]string{have[0]}, rest...)
			return groups
		}
	}
	return append(groups, g)
}

// groupOf is the certificate name is on (nil if none).
func (c *Config) groupOf(name string) []string {
	for _, g := range c.Groups {
		if slices.Contains(g, name) {
			return g
		}
	}
	return nil
}

// parseCertCommon reads what every source has: the challenge, the files,
// the state dir and the self-signed format.
func parseCertCommon(s *settings, c *Config) error {
	ch, chSrc := s.get("challenge")
	switch acme.ChallengeType(strings.ToLower(ch)) {
	case acme.DNS01, acme.TLSALPN01, acme.DNSPersist01:
		c.Challenge = acme.ChallengeType(strings.ToLower(ch))
	default:
		return bad(chSrc, ch, "dns-01, tls-alpn-01 or dns-persist-01")
	}
	c.CertFile, _ = s.get("cert")
	c.KeyFile, _ = s.get("key")
	sd, sdSrc := s.get("state-dir")
	if sd == "" {
		return bad(sdSrc, sd, "a directory for the account and certificates, e.g. /etc/letsencrypt")
	}
	c.StateDir = sd

	f, fsrc := s.get("self-signed-format")
	switch strings.ToLower(f) {
	case "plain":
	case "ra-tls":
		c.RATLS = true
	default:
		return bad(fsrc, f, "plain or ra-tls")
	}
	if c.RATLS && c.CertSource != sourceSelfSigned {
		return configErrorf("%s=%s needs CERT_SOURCE=self-signed (CERT_SOURCE is %s)", fsrc, f, c.CertSource)
	}

	return nil
}

// parseStatic loads CERT_SOURCE=static's pair.
func parseStatic(s *settings, c *Config) error {
	if c.CertFile == "" || c.KeyFile == "" {
		return configErrorf("CERT_SOURCE=static needs --cert (CERT_FILE) and --key (KEY_FILE): the PEM chain, leaf first, and its private key")
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return configErrorf("--cert %s and --key %s cannot be used: %s", c.CertFile, c.KeyFile, err)
	}
	c.StaticCert = &cert
	return rejectACMEOnly(s, c)
}

// parseACME reads CERT_SOURCE=acme's settings: names, CA, account.
func parseACME(s *settings, c *Config) error {
	if c.CertFile != "" || c.KeyFile != "" {
		return configErrorf("--cert/--key need CERT_SOURCE=static (CERT_SOURCE is %s)", c.CertSource)
	}
	if len(c.Domains) == 0 {
		return configErrorf("DOMAIN is not set: CERT_SOURCE=acme needs DOMAIN or DOMAINS (e.g. DOMAIN=app.example.com)")
	}
	if c.Challenge == acme.TLSALPN01 {
		for _, d := range c.Domains {
			if strings.HasPrefix(d, "*.") {
				return configErrorf("CHALLENGE_TYPE=tls-alpn-01 cannot validate the wildcard %q (RFC 8737): use CHALLENGE_TYPE=dns-01 or list names without *", d)
			}
		}
	}

	staging, err := s.boolean("acme-staging")
	if err != nil {
		return err
	}
	dir, dirSrc := s.get("acme-directory")
	switch {
	case dir != "" && staging:
		return configErrorf("ACME_STAGING=true and %s=%q contradict each other: set one", dirSrc, dir)
	case staging:
		c.Directory = acme.LetsEncryptStaging
	case dir == "":
		c.Directory = acme.LetsEncryptProduction
	default:
		u, err := url.Parse(dir)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
			return bad(dirSrc, dir, "an https:// ACME directory URL, e.g. "+acme.LetsEncryptProduction)
		}
		c.Directory = dir
	}
	if v, vsrc := s.get("acme-email"); v != "" {
		a, err := mail.ParseAddress(v)
		if err != nil || a.Address != v || a.Name != "" {
			return bad(vsrc, v, "a plain e-mail address like ops@example.com, or unset (it is optional, and public)")
		}
		c.Email = v
	}
	return parseACMEAccount(s, c)
}

// parseACMEAccount reads the account (EAB, key), CA roots and renewal.
func parseACMEAccount(s *settings, c *Config) error {
	kid, _ := s.get("ACME_EAB_KID")
	hmac, _ := s.get("ACME_EAB_HMAC")
	switch {
	case kid != "" && hmac == "":
		return configErrorf("ACME_EAB_KID is set but ACME_EAB_HMAC is not: external account binding needs both")
	case kid == "" && hmac != "":
		return configErrorf("ACME_EAB_HMAC is set but ACME_EAB_KID is not: external account binding needs both")
	case kid != "":
		if _, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(hmac, "=")); err != nil {
			return configErrorf("ACME_EAB_HMAC is set but is not base64url (copy the MAC key exactly as the CA shows it)")
		}
		c.EAB = &acme.EAB{KID: kid, HMAC: hmac}
	}
	ak, akSrc := s.get("account-key")
	switch strings.ToLower(ak) {
	case keyAuto, keyKMS, keyFile:
		c.AccountKey = strings.ToLower(ak)
	default:
		return bad(akSrc, ak, "kms, file or auto")
	}
	if v, vsrc := s.get("acme-ca-roots"); v != "" {
		pem, err := os.ReadFile(v)
		if err != nil {
			return configErrorf("%s=%s cannot be read: %s", vsrc, v, errors.Unwrap(err))
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return bad(vsrc, v, "a file of PEM CERTIFICATE blocks")
		}
		c.CARoots, c.CARootsFile = pool, v
	}
	if v, vsrc := s.get("renew-days"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 365 {
			return bad(vsrc, v, "a whole number of days from 1 to 365, or unset to follow the CA (ARI)")
		}
		c.RenewBefore = time.Duration(n) * 24 * time.Hour
	}
	return nil
}

// rejectACMEOnly refuses settings that only mean something with
// CERT_SOURCE=acme, so that an operator does not believe they took effect.
func rejectACMEOnly(s *settings, c *Config) error {
	for _, name := range []string{"set-caa", "gateway-domain", "acme-directory", "account-key", "renew-days", "ACME_EAB_KID", "dns-provider", "delegation-zone"} {
		if !s.given(name) {
			continue
		}
		v, src := s.get(name)
		if name == "set-caa" || name == "account-key" || name == "dns-provider" {
			if def := s.byName[name].def; strings.EqualFold(v, def) || (name == "set-caa" && !isTrue(v)) {
				continue
			}
		}
		return configErrorf("%s is set but CERT_SOURCE is %s: it applies only to CERT_SOURCE=acme (unset it, or use CERT_SOURCE=acme)", src, c.CertSource)
	}
	return nil
}

func isTrue(v string) bool {
	switch strings.ToLower(v) {
	case "1", "t", "true", "yes", "on":
		return true
	}
	return false
}

func parseDNS(s *settings, c *Config) error {
	var err error
	if c.SetCAA, err = s.boolean("set-caa"); err != nil {
		return err
	}
	c.GatewayDomain, _ = s.get("gateway-domain")
	c.GatewayDomain = strings.ToLower(strings.TrimSuffix(c.GatewayDomain, "."))
	c.TXTPrefix, _ = s.get("txt-prefix")
	c.DelegationZone, _ = s.get("delegation-zone")
	c.DNSZone, _ = s.get("dns-zone")
	if v, vsrc := s.get("dns-resolvers"); v != "" {
		for _, r := range splitList(v) {
			if _, _, err := net.SplitHostPort(r); err != nil {
				r = net.JoinHostPort(strings.Trim(r, "[]"), "53")
			}
			if err := checkHostPort(r); err != nil {
				return bad(vsrc, v, "DNS servers as host:port, comma-separated, e.g. 1.1.1.1:53,8.8.8.8")
			}
			c.DNSResolvers = append(c.DNSResolvers, r)
		}
	}
	if c.CertSource != sourceACME {
		return nil
	}
	// The plan is built once here with placeholders, only to validate every
	// DNS setting without I/O; the real one is built with the app's identity
	// and the account.
	pc := dnscaa.PlanConfig{
		Domains: c.Domains, GatewayDomain: c.GatewayDomain, TXTPrefix: c.TXTPrefix,
		AppID: strings.Repeat("0", 40), Port: max(c.Port, 443), DelegationZone: c.DelegationZone,
	}
	if c.SetCAA {
		pc.CAA = &dnsread.CAAPolicy{IssuerDomain: "letsencrypt.org", AccountURI: "https://acme.invalid/acct/1", ValidationMethods: []string{string(c.Challenge)}}
	}
	if _, err := dnscaa.NewPlan(pc); err != nil {
		return configErrorf("%s", fielderr.Rename(err, planFields))
	}
	if c.DNSZone != "" {
		z, err := dnscaa.ParseDomain(c.DNSZone)
		if err != nil || z.Wildcard() {
			return bad("DNS_ZONE", c.DNSZone, "the zone's name, e.g. example.com")
		}
		c.DNSZone = z.Name
	}
	provName, _ := s.get("dns-provider")
	cfg := dnscaa.ProviderConfig{Name: provName, Lookup: s.lookup, CallTimeout: 30 * time.Second}
	hc, err := cloudflareHook(s)
	if err != nil {
		return err
	}
	cfg.HTTPClient = hc
	p, err := dnscaa.NewProvider(cfg)
	if serr := parseDNSSetup(s, c, err == nil); serr != nil {
		if mode, _ := s.get("dns-setup-mode"); err != nil && (c.Challenge == acme.DNS01 || strings.EqualFold(mode, dnsModeAPI)) {
			return providerError(err, s, c)
		}
		return serr
	}
	if err != nil && c.DNSSetup.awaits() {
		return nil // the operator writes every record: no provider is used
	}
	if err != nil {
		return providerError(err, s, c)
	}
	c.DNS, c.DNSProvider = p, cfg
	return nil
}

// proxyFields names proxy.Config's fields as the operator sets them.
var proxyFields = map[string]string{
	"Default": "TARGET_ENDPOINT", "Routes": "ROUTING_MAP", "Mode": "PROXY_MODE", "ALPN": "ALPN",
	"ProxyProtocol": "PROXY_PROTOCOL", "ProxyProtocolIn": "PROXY_PROTOCOL_IN", "ProxyProtocolFrom": "PROXY_PROTOCOL_FROM", "MaxConns": "MAXCONN", "ConnectTimeout": "TIMEOUT_CONNECT",
	"ClientTimeout": "TIMEOUT_CLIENT", "ServerTimeout": "TIMEOUT_SERVER",
}

// planFields names dnscaa.PlanConfig's fields as the operator sets them.
var planFields = map[string]string{
	"Domains": "DOMAIN", "TXTPrefix": "TXT_PREFIX", "GatewayDomain": "GATEWAY_DOMAIN", "Port": "PORT",
	"CAA": "SET_CAA", "DelegationZone": "DELEGATION_ZONE", "AppID": "the app id (from the dstack guest agent)",
}

// acmeFields names acme.Config's fields as the operator sets them.
var acmeFields = map[string]string{
	"Keys": "ACME_ACCOUNT_KEY", "StateDir": "STATE_DIR", "Challenge": "CHALLENGE_TYPE", "Solver": "CHALLENGE_TYPE",
	"DirectoryURL": "ACME_DIRECTORY", "EAB": "ACME_EAB_KID", "RenewBefore": "RENEW_DAYS_BEFORE", "CAA": "SET_CAA",
}

// clusterFields names clusterstore.Options' fields as the operator sets them.
var clusterFields = map[string]string{"Endpoints": "CLUSTER_STORE", "Prefix": "CLUSTER_PREFIX", "StateDir": "STATE_DIR"}

// setupFields names dnssetup's Waiter and Webhook fields as the operator sets
// them.
var setupFields = map[string]string{"Resolvers": "DOH_RESOLVERS", "Token": "DNS_WEBHOOK_TOKEN"}

// challengeFields names dnscaa.ChallengeOptions' fields (and ApplyOptions'
// Zone) as the operator sets them.
var challengeFields = map[string]string{"Zone": "DNS_ZONE", "DelegationZone": "DELEGATION_ZONE"}

// providerError reports a dnscaa.NewProvider error under the name the
// operator gave the provider by, and says why a provider is needed.
func providerError(err error, s *settings, c *Config) error {
	name := "DNS_PROVIDER"
	if s.set["dns-provider"] {
		name = "--dns-provider"
	}
	msg := fielderr.Rename(err, map[string]string{"Name": name}).Error()
	switch {
	case c.Challenge == acme.DNS01:
		return configErrorf("%s (CHALLENGE_TYPE=dns-01 writes the challenge through the DNS provider)", msg)
	case c.SetCAA:
		return configErrorf("%s (SET_CAA=true writes CAA through the DNS provider)", msg)
	}
	return configErrorf("%s", msg)
}

func parseEvidence(s *settings, c *Config) error {
	var err error
	if c.EvidenceServer, err = s.boolean("evidence-server"); err != nil {
		return err
	}
	c.EvidenceDir, _ = s.get("evidence-dir")
	return nil
}

// checkBackends makes sure every served domain reaches a backend and every
// ROUTING_MAP key is a name a certificate covers: a key no certificate covers
// is a typo an operator wants to hear about at start, not a TLS error later.
func checkBackends(c *Config) error {
	if c.Default.IsZero() && len(c.Routes) == 0 {
		return configErrorf("no backend: set TARGET_ENDPOINT (e.g. app:80) or ROUTING_MAP (domain=host:port per line)")
	}
	if c.CertSource != sourceACME {
		return nil
	}
	for _, r := range c.Routes {
		if !slices.ContainsFunc(c.Domains, func(d string) bool { return covers(d, r.Host) }) {
			return configErrorf("ROUTING_MAP key %q is not among DOMAIN/DOMAINS (%s): no certificate would cover it; add it to DOMAINS or fix the key", r.Host, strings.Join(c.Domains, ", "))
		}
	}
	if c.Default.IsZero() {
		for _, d := range c.Domains {
			if !slices.ContainsFunc(c.Routes, func(r proxy.Route) bool { return r.Host == d || covers(r.Host, d) }) {
				return configErrorf("domain %q has no backend: add %s=host:port to ROUTING_MAP or set TARGET_ENDPOINT", d, d)
			}
		}
	}
	return nil
}

// covers reports whether a certificate (or route) for name serves host.
func covers(name, host string) bool { return dnsname.Covers(name, host) }

// devFlags are the flags --dev honours; everything else is the dev world's.
var devFlags = []string{"listen", "mode", "alpn", "target", "state-dir", "metrics-listen", "log-format", "log-level",
	"drain-timeout", "maxconn", "timeout-connect", "timeout-client", "timeout-server", "evidence-server", "proxy-protocol", "replicas", "challenge"}

// parseDevFlags checks the flags given with --dev. The environment is not
// read at all in dev mode: a shell holding production credentials
// (CLOUDFLARE_API_TOKEN) must not leak them into a local demo.
func parseDevFlags(s *settings) (*Config, error) {
	c := &Config{Dev: true}
	for name := range s.set {
		if name == "dev" || name == "help" || name == "h" {
			continue
		}
		if !slices.Contains(devFlags, name) {
			return nil, configErrorf("--%s cannot be used with --dev (it sets up its own domain, CA, DNS and agent; allowed: --%s)", name, strings.Join(devFlags, ", --"))
		}
		c.DevArgs = append(c.DevArgs, "--"+name+"="+*s.vals[name])
	}
	slices.Sort(c.DevArgs)
	return c, nil
}
