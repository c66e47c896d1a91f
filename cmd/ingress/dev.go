//go:build !nodev

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tee-ingress/tee-ingress/dnscaa"
	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/internal/acmeca"
	"github.com/tee-ingress/tee-ingress/internal/agentsim"
	"github.com/tee-ingress/tee-ingress/internal/cfemu"
	"github.com/tee-ingress/tee-ingress/internal/dnsserver"

	"github.com/miekg/dns"
)

// Dev mode's fixed names. The domain is under .test (RFC 2606): it can never
// be a real name on the internet.
// devBuilt: --dev is in this build.
const devBuilt = true

const (
	devZone        = "ingress.test"
	devDomain      = "app." + devZone
	devGateway     = "_.gateway." + devZone
	devListen      = "127.0.0.1:8443"
	devToken       = "dev-token-not-a-secret"
	modulePath     = "github.com/tee-ingress/tee-ingress"
	devCAFile      = "ca-root.pem"
	devTDXRootFile = "sim-tdx-root.pem"
	devDNSFile     = "dns-addr.txt"
	devSeedFile    = "sim-seed"
	devCAAddrFile  = "ca-addr.txt"
	devSocket      = "dstack.sock"
)

const devBanner = `
=============================================================================
  ingress --dev: A LOCAL DEMO. THIS IS NOT A TEE.
  Quotes come from a dstack simulator whose root key is on this disk, the
  CA is pebble, DNS and the Cloudflare API are emulated on 127.0.0.1.
  Nothing here is confidential or attested. Never deploy with --dev.
=============================================================================
`

// devWorld is the outside of a TEE, in this process: DNS for ingress.test,
// the Cloudflare API over it, an ACME CA validating against it, the guest
// agent simulator on a unix socket, and a demo backend.
type devWorld struct {
	dir     string
	dns     *dnsserver.Server
	cf      *cfemu.Emulator
	ca      *acmeca.CA
	sim     *agentsim.Simulator
	backend *http.Server
	beAddr  string
	beDone  chan error
	// operator is the dev operator's DNS webhook (dns-persist-01): it
	// checks the envelope as a real receiver must, then creates the
	// records. Nil: not started.
	operator     *http.Server
	operatorAddr string
	operatorDone chan error
}

func (w *devWorld) close() {
	if w.operator != nil {
		w.operator.Close()
		<-w.operatorDone
	}
	if w.backend != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		w.backend.Shutdown(ctx)
		cancel()
		<-w.beDone
	}
	if w.sim != nil {
		w.sim.Close()
	}
	if w.ca != nil {
		w.ca.Close()
	}
	if w.cf != nil {
		w.cf.Close()
	}
	if w.dns != nil {
		w.dns.Close()
	}
}

// runDev starts the dev world and runs the daemon against it (or
// --replicas daemons, dev_replicas.go). The environment is not read: every
// setting comes from the world, and the few flags parseDevFlags allows.
func runDev(ctx context.Context, cfg *Config, log *slog.Logger, stdout, stderr io.Writer, reload <-chan os.Signal) int {
	io.WriteString(stderr, devBanner)
	log.Warn("NOT A TEE: --dev runs everything locally with a simulator; nothing is attested")
	args := []string{"--listen=" + devListen}
	dir, replicas, persist := "", 1, false
	for _, a := range cfg.DevArgs {
		if v, ok := strings.CutPrefix(a, "--challenge="); ok {
			switch strings.ToLower(v) {
			case "dns-01":
			case "dns-persist-01":
				persist = true
			default:
				fmt.Fprintf(stderr, "ingress: error: --dev --challenge=%q: the dev world offers dns-01 and dns-persist-01\n", v)
				return 2
			}
		}
		if v, ok := strings.CutPrefix(a, "--state-dir="); ok {
			dir = v
			continue
		}
		if v, ok := strings.CutPrefix(a, "--replicas="); ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 10 {
				fmt.Fprintf(stderr, "ingress: error: --replicas=%q is not valid: want a number of instances from 1 to 10\n", v)
				return 2
			}
			replicas = n
			continue
		}
		args = append(args, a)
	}
	if dir == "" {
		tmp, err := os.MkdirTemp("", "ingress-dev-")
		if err != nil {
			log.Error("cannot create a state dir", "err", err)
			return 1
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		log.Error("cannot create the state dir (check --state-dir)", "dir", dir, "err", err)
		return 1
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	w, err := startDevWorld(dir, log)
	if err != nil {
		w.close()
		log.Error("cannot start the dev world", "err", err)
		return 1
	}
	defer w.close()
	if persist {
		if err := w.startOperator(log); err != nil {
			log.Error("cannot start the dev operator's webhook", "err", err)
			return 1
		}
	}
	if replicas > 1 {
		return runDevReplicas(ctx, w, args, replicas, log, stdout, stderr)
	}
	env := w.env(dir, filepath.Join(dir, devSocket))
	dcfg, err := parseConfig(args, lookupIn(env))
	if err != nil {
		fmt.Fprintf(stderr, "ingress: error: --dev: %s\n", err)
		return 2
	}
	return runDaemon(ctx, dcfg, log, w.environment(env, stdout, reload, func(addr *net.TCPAddr) {
		w.printCommands(stdout, addr)
		fmt.Fprintln(stdout, "ready")
	}))
}

// env is the daemon's configuration against the world, with its state in
// stateDir and the guest agent at sock.
func (w *devWorld) env(stateDir, sock string) map[string]string {
	env := map[string]string{
		"DOMAIN":                    devDomain,
		"TARGET_ENDPOINT":           "http://" + w.beAddr,
		"GATEWAY_DOMAIN":            devGateway,
		"SET_CAA":                   "true",
		"DNS_PROVIDER":              "cloudflare",
		"CLOUDFLARE_API_TOKEN":      devToken,
		"ACME_DIRECTORY":            w.ca.DirectoryURL(),
		"ACME_ACCOUNT_KEY":          "kms",
		"STATE_DIR":                 filepath.Join(stateDir, "letsencrypt"),
		"EVIDENCE_DIR":              filepath.Join(stateDir, "evidences"),
		"DNS_RESOLVERS":             w.dns.Addr(),
		"DSTACK_SIMULATOR_ENDPOINT": sock,
	}
	if w.operator != nil {
		// dns-persist-01: nothing in the "TEE" can write DNS; the dev
		// operator's webhook creates the records.
		delete(env, "CLOUDFLARE_API_TOKEN")
		delete(env, "DNS_PROVIDER")
		env["DNS_SETUP_MODE"] = "webhook"
		env["DNS_WEBHOOK_URL"] = "http://" + w.operatorAddr + "/dns"
		env["DNS_WEBHOOK_TOKEN"] = devToken
		env["DNS_SETUP_INTERVAL"] = "200ms"
	}
	return env
}

func lookupIn(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

// environment connects a daemon to the world's CA and Cloudflare API.
func (w *devWorld) environment(env map[string]string, stdout io.Writer, reload <-chan os.Signal, onReady func(*net.TCPAddr)) environment {
	return environment{
		stdout:        stdout,
		reload:        reload,
		acmeTransport: w.ca.HTTPClient().Transport,
		dnsProvider: func(base dnscaa.ProviderConfig) (*dnscaa.Client, error) {
			base.Name, base.Lookup, base.HTTPClient = "cloudflare", lookupIn(env), w.cf.HTTPClient()
			return dnscaa.NewProvider(base)
		},
		onReady: onReady,
	}
}

// printCommands prints how to check the instance listening on addr.
func (w *devWorld) printCommands(stdout io.Writer, addr *net.TCPAddr) {
	port := strconv.Itoa(addr.Port)
	host := addr.IP.String()
	ca := filepath.Join(w.dir, devCAFile)
	methods := ""
	if w.operator != nil {
		methods = " --validation-methods dns-persist-01"
	}
	fmt.Fprintf(stdout, "verify: %s domain https://%s --connect %s --ca-file %s --tdx-root %s --resolver %s --ct-url off%s\n",
		verifycliCommand(), devDomain, net.JoinHostPort(host, port), shellQuote(ca), shellQuote(filepath.Join(w.dir, devTDXRootFile)), w.dns.Addr(), methods)
	fmt.Fprintf(stdout, "curl --cacert %s --resolve %s:%s:%s https://%s:%s/\n", shellQuote(ca), devDomain, port, host, devDomain, port)
	fmt.Fprintf(stdout, "evidence: https://%s:%s/evidences/ (state dir %s)\n", devDomain, port, shellQuote(w.dir))
}

// startDevWorld starts the stand-ins and writes the trust material a
// verifier needs into dir. On error, what was started is in the returned
// world for close.
func startDevWorld(dir string, log *slog.Logger) (*devWorld, error) {
	w := &devWorld{dir: dir}
	var err error
	if w.dns, err = dnsserver.Start(devZone); err != nil {
		return w, fmt.Errorf("dns server: %w", err)
	}
	w.cf = cfemu.New(w.dns, devToken)
	if w.ca, err = startDevCA(dir, w.dns.Addr(), log); err != nil {
		return w, fmt.Errorf("acme ca: %w", err)
	}
	seed, err := devSeed(dir)
	if err != nil {
		return w, err
	}
	if w.sim, err = agentsim.New(agentsim.Config{Seed: seed, Stripped: true}); err != nil {
		return w, fmt.Errorf("agent simulator: %w", err)
	}
	if err := w.sim.Serve(filepath.Join(dir, devSocket)); err != nil {
		return w, fmt.Errorf("agent simulator: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return w, fmt.Errorf("demo backend: %w", err)
	}
	w.beAddr = ln.Addr().String()
	w.backend = &http.Server{Handler: http.HandlerFunc(demoBackend), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	w.beDone = make(chan error, 1)
	go func() { w.beDone <- w.backend.Serve(ln) }()

	roots, err := w.ca.RootsPEM()
	if err != nil {
		return w, fmt.Errorf("acme ca roots: %w", err)
	}
	// Roots of earlier runs stay trusted: a certificate kept in the state
	// dir chains to the CA of the run that issued it.
	if old, err := os.ReadFile(filepath.Join(dir, devCAFile)); err == nil && !bytes.Contains(old, roots) {
		roots = append(old, roots...)
	}
	for name, data := range map[string][]byte{
		devCAAddrFile:  []byte(w.ca.Addr() + "\n"),
		devCAFile:      roots,
		devTDXRootFile: w.sim.RootPEM(),
		devDNSFile:     []byte(w.dns.Addr() + "\n"),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return w, fmt.Errorf("writing trust material: %w", err)
		}
	}
	log.Info("dev world started", "dns", w.dns.Addr(), "acme_directory", w.ca.DirectoryURL(), "cloudflare_api", w.cf.URL(),
		"agent_socket", filepath.Join(dir, devSocket), "backend", w.beAddr, "state_dir", dir)
	return w, nil
}

// startDevCA starts pebble at the address an earlier run with this state
// dir used, so that the directory URL, and with it the certificate stored
// under it, stays valid: a restart issues nothing. Pebble's own state (the
// account, its CA key) is in memory and new; the account is registered
// again under the same KMS-derived key.
func startDevCA(dir, dnsAddr string, log *slog.Logger) (*acmeca.CA, error) {
	opts := acmeca.Options{DNSAddr: dnsAddr, Logger: log.With("component", "pebble")}
	if b, err := os.ReadFile(filepath.Join(dir, devCAAddrFile)); err == nil {
		opts.Listen = strings.TrimSpace(string(b))
		ca, err := acmeca.Start(opts)
		if err == nil {
			return ca, nil
		}
		log.Warn("the dev CA cannot come back at its earlier address; a new one means a new certificate", "addr", opts.Listen, "err", err)
		opts.Listen = ""
	}
	return acmeca.Start(opts)
}

// devSeed keeps the simulator's seed in the state dir, so that a dev run
// with the same --state-dir trusts the same simulator root.
func devSeed(dir string) ([]byte, error) {
	path := filepath.Join(dir, devSeedFile)
	b, err := os.ReadFile(path)
	if err == nil && len(b) >= 16 {
		return b, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	b = make([]byte, 32)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	return b, nil
}

func demoBackend(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "hello from the tee-ingress demo backend\nhost %s, path %s, forwarded for %q, proto %q\n",
		r.Host, r.URL.Path, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"))
}

// verifycliCommand is how the user runs verifycli: the binary beside this
// one (as in the Docker image), else go run from the module.
func verifycliCommand() string {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "verifycli")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return shellQuote(p)
		}
	}
	if b, err := os.ReadFile("go.mod"); err == nil && bytes.Contains(b, []byte("module "+modulePath+"\n")) {
		return "go run ./verifycli"
	}
	return "go run " + modulePath + "/verifycli"
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-:+=@,", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// startOperator serves the dev operator's webhook on loopback.
func (w *devWorld) startOperator(log *slog.Logger) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	w.operatorAddr = ln.Addr().String()
	w.operator = &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.createRecords(rw, r, log.With("component", "dev-operator"))
	}), ReadHeaderTimeout: 10 * time.Second}
	w.operatorDone = make(chan error, 1)
	go func() { w.operatorDone <- w.operator.Serve(ln) }()
	return nil
}

// createRecords is what an operator's endpoint does: verify the request
// (token, quote, app), then write the records.
func (w *devWorld) createRecords(rw http.ResponseWriter, r *http.Request, log *slog.Logger) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	p, checks := evidence.VerifyWebhook(body, evidence.WebhookOptions{Token: devToken,
		Quote: evidence.VerifyOptions{TrustedRootsPEM: w.sim.RootPEM()}})
	if evidence.Failed(checks, false) {
		for _, c := range checks {
			if c.Status == evidence.Fail {
				log.Error("refused the DNS webhook request", "check", c.Name, "detail", c.Detail)
			}
		}
		http.Error(rw, "refused", http.StatusForbidden)
		return
	}
	for _, rec := range p.Records {
		value := rec.Value
		switch rec.Type {
		case "TXT":
			value = strconv.Quote(value)
		case "CNAME":
			value += "."
		}
		rr, err := dns.NewRR(rec.Name + ". 60 IN " + rec.Type + " " + value)
		if err != nil {
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		w.dns.Add(rr)
		log.Info("dev operator created a record (its webhook checked the quote first)", "record", rec.String())
	}
}
