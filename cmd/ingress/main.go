package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tee-ingress/tee-ingress/proxy"
)

const usage = `usage: ingress --cert-source static --cert FILE --key FILE --target HOST:PORT [flags]

Terminates TLS with the given certificate and forwards to the target.

Every flag has an environment variable (in brackets); a flag wins over its variable.

  --cert-source SRC      where certificates come from: static [CERT_SOURCE]
  --cert FILE            certificate chain, PEM, leaf first (static)
  --key FILE             private key, PEM (static)
  --listen ADDR          listen address, default :443 [PORT: a port number]
  --target URL           default backend: host:port or http://, https://, h2c://,
                         grpc://, tcp:// host:port [TARGET_ENDPOINT]
  --routing-map MAP      per-domain backends: domain=host:port, one per line or
                         comma-separated; *.example.com matches one label [ROUTING_MAP]
  --mode MODE            tcp (L4, any protocol; default) or http (L7) [PROXY_MODE]
  --alpn LIST            ALPN protocols offered in tcp mode, comma-separated [ALPN]
  --proxy-protocol BOOL  send a PROXY protocol v2 header to backends [PROXY_PROTOCOL]
  --maxconn N            most client connections open at once, default 4096 [MAXCONN]
  --timeout-connect D    backend dial timeout, default 10s [TIMEOUT_CONNECT]
  --timeout-client D     client inactivity timeout, default 86400s [TIMEOUT_CLIENT]
  --timeout-server D     backend inactivity timeout, default 86400s [TIMEOUT_SERVER]
  --drain-timeout D      on SIGTERM, how long open connections may finish, default 10s [DRAIN_TIMEOUT]
  --log-format FMT       text or json, default text [LOG_FORMAT]

Examples:
  ingress --cert-source static --cert cert.pem --key key.pem --listen :8443 --target app:8080
  PROXY_MODE=http TARGET_ENDPOINT=h2c://grpc-app:50051 ingress --cert-source static --cert c.pem --key k.pem
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	code := run(ctx, os.Args[1:], os.LookupEnv, os.Stderr)
	stop()
	os.Exit(code)
}

// usageError is bad input: exit status 2.
type usageError struct{ msg, hint string }

func (e *usageError) Error() string { return e.msg }

type settings struct {
	proxy    proxy.Config
	listen   string
	drain    time.Duration
	certFile string
	keyFile  string
	logJSON  bool
}

// run is main without the process: it returns the exit status.
func run(ctx context.Context, args []string, lookup func(string) (string, bool), stderr io.Writer) int {
	st, err := parse(args, lookup, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "ingress: error: %s\n", err)
		var ue *usageError
		if errors.As(err, &ue) && ue.hint != "" {
			fmt.Fprintf(stderr, "hint: %s\n", ue.hint)
		}
		return 2
	}
	var h slog.Handler = slog.NewTextHandler(stderr, nil)
	if st.logJSON {
		h = slog.NewJSONHandler(stderr, nil)
	}
	log := slog.New(h)
	st.proxy.Logger = log

	store, err := loadStatic(st.certFile, st.keyFile)
	if err != nil {
		fmt.Fprintf(stderr, "ingress: error: %s\n", err)
		return 2
	}
	st.proxy.Certs = store
	st.proxy.Challenges = store
	srv, err := proxy.New(st.proxy)
	if err != nil {
		fmt.Fprintf(stderr, "ingress: error: %s\n", err)
		return 2
	}
	// TCP keep-alive finds clients that vanished (the client timeout is long),
	// with one probe setting: two system calls per connection, not four.
	lc := net.ListenConfig{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: time.Minute, Interval: -1, Count: -1}}
	ln, err := lc.Listen(context.Background(), "tcp", st.listen)
	if err != nil {
		fmt.Fprintf(stderr, "ingress: error: listening on %s (--listen / PORT): %s\n", st.listen, err)
		return 1
	}
	log.Info("listening", "addr", ln.Addr().String(), "mode", st.proxy.Mode.String(), "target", st.proxy.Default.String(), "routes", len(st.proxy.Routes))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case <-ctx.Done():
		log.Info("draining", "timeout", st.drain.String())
	case err := <-served:
		log.Error("serving stopped", "err", err)
		return 1
	}
	// A fresh context: the signal context is already cancelled.
	dctx, cancel := context.WithTimeout(context.Background(), st.drain)
	defer cancel()
	if err := srv.Shutdown(dctx); err != nil {
		log.Warn("drain deadline reached; remaining connections were closed", "err", err)
	}
	<-served
	log.Info("stopped")
	return 0
}

func loadStatic(certFile, keyFile string) (*proxy.CertStore, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading --cert %s and --key %s: %w", certFile, keyFile, err)
	}
	names := cert.Leaf.DNSNames
	if len(names) == 0 && cert.Leaf.Subject.CommonName != "" {
		names = []string{cert.Leaf.Subject.CommonName}
	}
	certs := make(map[string]*tls.Certificate)
	primary := "default"
	for i, n := range names {
		if i == 0 {
			primary = n
		}
		certs[n] = &cert
	}
	if len(certs) == 0 {
		certs[primary] = &cert // no names (an IP certificate): served to everyone
	}
	var store proxy.CertStore
	if err := store.Set(primary, certs); err != nil {
		return nil, fmt.Errorf("using --cert %s: %w", certFile, err)
	}
	return &store, nil
}

// parse resolves every setting from its flag, else its environment variable,
// else its default, and validates it; errors name the flag or variable.
func parse(args []string, lookup func(string) (string, bool), stderr io.Writer) (*settings, error) {
	fs := flag.NewFlagSet("ingress", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	type opt struct {
		flag, env, def string
		val            *string
	}
	opts := []*opt{
		{flag: "cert-source", env: "CERT_SOURCE", def: "acme"},
		{flag: "cert"},
		{flag: "key"},
		{flag: "listen", env: "PORT", def: ":443"},
		{flag: "target", env: "TARGET_ENDPOINT"},
		{flag: "routing-map", env: "ROUTING_MAP"},
		{flag: "mode", env: "PROXY_MODE", def: "tcp"},
		{flag: "alpn", env: "ALPN"},
		{flag: "proxy-protocol", env: "PROXY_PROTOCOL", def: "false"},
		{flag: "maxconn", env: "MAXCONN", def: "4096"},
		{flag: "timeout-connect", env: "TIMEOUT_CONNECT", def: "10s"},
		{flag: "timeout-client", env: "TIMEOUT_CLIENT", def: "86400s"},
		{flag: "timeout-server", env: "TIMEOUT_SERVER", def: "86400s"},
		{flag: "drain-timeout", env: "DRAIN_TIMEOUT", def: "10s"},
		{flag: "log-format", env: "LOG_FORMAT", def: "text"},
	}
	byFlag := make(map[string]*opt)
	for _, o := range opts {
		o.val = fs.String(o.flag, "", "")
		byFlag[o.flag] = o
	}
	help := fs.Bool("help", false, "")
	fs.BoolVar(help, "h", false, "")
	if err := fs.Parse(args); err != nil {
		return nil, &usageError{msg: err.Error(), hint: "ingress --help lists the flags"}
	}
	if *help {
		io.WriteString(stderr, usage)
		return nil, flag.ErrHelp
	}
	if fs.NArg() > 0 {
		return nil, &usageError{msg: fmt.Sprintf("unexpected argument %q", fs.Arg(0)), hint: "ingress --help lists the flags"}
	}
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	// get returns a setting's value and the name to blame for it.
	get := func(name string) (string, string) {
		o := byFlag[name]
		if set[name] {
			return *o.val, "--" + name
		}
		if o.env != "" {
			if v, ok := lookup(o.env); ok && v != "" {
				return v, o.env
			}
		}
		return o.def, "--" + name
	}
	bad := func(src, val, want string) error {
		return &usageError{msg: fmt.Sprintf("%s %q: want %s", src, val, want)}
	}

	st := &settings{}
	if v, src := get("cert-source"); v != "static" {
		if v == "acme" || v == "self-signed" {
			return nil, &usageError{msg: fmt.Sprintf("%s %q is not available in this build yet", src, v), hint: "use --cert-source static --cert FILE --key FILE"}
		}
		return nil, bad(src, v, "static")
	}
	st.certFile, _ = get("cert")
	st.keyFile, _ = get("key")
	if st.certFile == "" || st.keyFile == "" {
		return nil, &usageError{msg: "--cert-source static needs --cert and --key", hint: "--cert is the PEM chain (leaf first), --key its PEM private key"}
	}

	v, src := get("listen")
	if src == "PORT" {
		if n, err := strconv.Atoi(v); err != nil || n < 1 || n > 65535 {
			return nil, bad(src, v, "a port number from 1 to 65535")
		}
		v = ":" + v
	} else if _, _, err := net.SplitHostPort(v); err != nil {
		return nil, bad(src, v, "an address like :443 or 127.0.0.1:8443")
	}
	st.listen = v

	if v, src := get("target"); v != "" {
		t, err := proxy.ParseTarget(v)
		if err != nil {
			return nil, &usageError{msg: fmt.Sprintf("%s: %s", src, err)}
		}
		st.proxy.Default = t
	}
	if v, src := get("routing-map"); v != "" {
		routes, err := proxy.ParseRoutingMap(v)
		if err != nil {
			return nil, &usageError{msg: fmt.Sprintf("%s: %s", src, err)}
		}
		st.proxy.Routes = routes
	}
	if st.proxy.Default.IsZero() && len(st.proxy.Routes) == 0 {
		return nil, &usageError{msg: "no backend: set --target (TARGET_ENDPOINT) or --routing-map (ROUTING_MAP)", hint: "e.g. --target app:8080"}
	}
	mode, src := get("mode")
	m, err := proxy.ParseMode(mode)
	if err != nil {
		return nil, bad(src, mode, "tcp or http")
	}
	st.proxy.Mode = m
	if v, src := get("alpn"); v != "" {
		for _, p := range strings.Split(v, ",") {
			p = strings.TrimSpace(p)
			if p == "" {
				return nil, bad(src, v, "a comma-separated list like h2,http/1.1")
			}
			st.proxy.ALPN = append(st.proxy.ALPN, p)
		}
	}
	pp, src := get("proxy-protocol")
	if st.proxy.ProxyProtocol, err = strconv.ParseBool(pp); err != nil {
		return nil, bad(src, pp, "true or false")
	}
	mc, src := get("maxconn")
	if st.proxy.MaxConns, err = strconv.Atoi(mc); err != nil || st.proxy.MaxConns < 1 {
		return nil, bad(src, mc, "a whole number of connections of at least 1, e.g. 4096")
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
	}{
		{"timeout-connect", &st.proxy.ConnectTimeout},
		{"timeout-client", &st.proxy.ClientTimeout},
		{"timeout-server", &st.proxy.ServerTimeout},
		{"drain-timeout", &st.drain},
	} {
		v, src := get(d.name)
		dur, err := time.ParseDuration(v)
		if err != nil || dur <= 0 {
			return nil, bad(src, v, "a positive duration with a unit, e.g. 10s, 5m or 86400s")
		}
		*d.dst = dur
	}
	switch lf, src := get("log-format"); lf {
	case "text":
	case "json":
		st.logJSON = true
	default:
		return nil, bad(src, lf, "text or json")
	}
	return st, nil
}
