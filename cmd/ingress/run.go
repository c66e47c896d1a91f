package main

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/challenge/dns01"

	"github.com/tee-ingress/tee-ingress/acme"
	"github.com/tee-ingress/tee-ingress/dnscaa"
	"github.com/tee-ingress/tee-ingress/dnsread"
	"github.com/tee-ingress/tee-ingress/dnssetup"
	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/evidence/agent"
	"github.com/tee-ingress/tee-ingress/internal/dirlock"
	"github.com/tee-ingress/tee-ingress/internal/fielderr"
	"github.com/tee-ingress/tee-ingress/internal/pageout"
	"github.com/tee-ingress/tee-ingress/internal/wait"
	"github.com/tee-ingress/tee-ingress/proxy"
)

// Retry bounds for the start-up steps (agent, account, DNS records, evidence):
// the first retry comes quickly, a long outage is retried every few minutes.
const (
	retryInitial = 2 * time.Second
	retryMax     = 5 * time.Minute
)

// Steps named in logs, /readyz and the tee_ingress_step_ok metric.
const (
	stepAgent    = "agent"
	stepAccount  = "account"
	stepDNS      = "dns"
	stepEvidence = "evidence"
	stepCluster  = "cluster"
)

// environment is what the world around the configuration provides. The zero
// value is production; dev mode replaces parts of it.
type environment struct {
	// stdout receives results (dev mode's commands). Nil: discarded.
	stdout io.Writer
	// acmeTransport carries ACME requests. Nil: the default transport with
	// the system roots plus ACME_CA_ROOTS.
	acmeTransport http.RoundTripper
	// dnsProvider replaces the provider built from the configuration. Nil:
	// built from DNS_PROVIDER and its credentials.
	// It gets the configuration's provider settings with Logger and Observer
	// filled in.
	dnsProvider func(base dnscaa.ProviderConfig) (*dnscaa.Client, error)
	// onReady is called once when the daemon first becomes ready, with the
	// address it listens on; it must return quickly (it may run under the
	// certificate manager's lock). Nil: nothing.
	onReady func(addr *net.TCPAddr)
	// reload delivers SIGHUP. Nil: no reloads.
	reload <-chan os.Signal
	// dohClient carries DNS-over-HTTPS checks, webhookClient the DNS
	// webhook. Nil: clients with the system's roots.
	dohClient, webhookClient *http.Client
}

// daemon is one run of the ingress: the listener and proxy, the certificate
// lifecycle, the evidence publisher and the metrics server. Its goroutines
// are started by runDaemon and waited for before it returns.
type daemon struct {
	cfg   *Config
	log   *slog.Logger
	env   environment
	met   *metrics
	store proxy.CertStore
	srv   *proxy.Server
	addr  *net.TCPAddr
	mgr   *acme.Manager
	// shared is the replicas' store (CLUSTER_STORE); nil: a single instance.
	shared *sharedStore
	dns    *dnscaa.Client // nil: no DNS provider
	// dnsMu serialises the record writes of applyDNS and of the CAA pin
	// before each order: both read, compare and write the same names.
	dnsMu sync.Mutex
	start time.Time

	evidenceHandler lazyHandler
	attestation     lazyHandler
	kick            chan struct{} // wakes the evidence loop; buffered, coalescing

	mu           sync.Mutex
	agent        *agent.Agent
	info         *agent.AppInfo
	ppIn         bool // the listener reads a PROXY header (PROXY_PROTOCOL_IN)
	publisher    *evidence.Publisher
	account      []byte
	accountURI   string
	certs        map[string]*acme.Certificate // by domain
	problems     map[string]string            // step -> what is wrong now
	certGen      int                          // bumped by every certificate change
	publishedGen int                          // certGen of the last published bundle, -1 before the first
	publishedAll bool                         // the last published bundle holds every configured domain
	published    time.Time
	dnsRecords   []dnssetup.Record // what the operator must create (DNS_SETUP_MODE other than api)
	ready        bool
	readyOnce    sync.Once
	selfSigned   *tls.Certificate
	static       *tls.Certificate // the static source's certificate, replaced by a reload
}

// lazyHandler answers 503 until a handler is set: the evidence and
// attestation handlers need the guest agent, which may come later than the
// listener.
type lazyHandler struct {
	h    atomic.Pointer[http.Handler]
	what string
}

func (l *lazyHandler) set(h http.Handler) { l.h.Store(&h) }

func (l *lazyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := l.h.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	w.Header().Set("Retry-After", "5")
	http.Error(w, l.what+" not available yet: the dstack guest agent has not been reached", http.StatusServiceUnavailable)
}

func newDaemon(cfg *Config, log *slog.Logger, env environment) *daemon {
	if env.stdout == nil {
		env.stdout = io.Discard
	}
	d := &daemon{
		cfg: cfg, log: log, env: env, start: time.Now(),
		kick:         make(chan struct{}, 1),
		certs:        map[string]*acme.Certificate{},
		problems:     map[string]string{},
		publishedGen: -1,
	}
	d.evidenceHandler.what = "evidence"
	d.attestation.what = "attestation"
	d.met = newMetrics(d)
	return d
}

// runDaemon runs the ingress until ctx ends, then drains and returns the exit
// status.
func runDaemon(ctx context.Context, cfg *Config, log *slog.Logger, env environment) int {
	d := newDaemon(cfg, log, env)
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	unlock, code := d.lockDirs()
	if code != 0 {
		return code
	}
	defer unlock()
	if err := d.prepare(); err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}

	// TCP keep-alive finds clients that vanished (the client timeout is
	// long), with one probe setting: two system calls per connection.
	lc := net.ListenConfig{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: time.Minute, Interval: -1, Count: -1}}
	ln, err := lc.Listen(context.Background(), "tcp", cfg.Listen)
	if err != nil {
		log.Error("cannot listen (check --listen / PORT)", "addr", cfg.Listen, "err", err)
		return 1
	}
	d.addr = ln.Addr().(*net.TCPAddr)
	d.ppIn = d.proxyProtocolIn(ctx, d.addr.Port)

	srv, err := proxy.New(d.proxyConfig())
	if err != nil {
		err = fielderr.Rename(err, proxyFields)
		ln.Close()
		log.Error("cannot start the proxy", "err", err)
		return 1
	}
	d.srv = srv
	msrv, mserved, err := d.serveMetrics()
	if err != nil {
		ln.Close()
		srv.Shutdown(context.Background())
		log.Error("cannot listen for metrics (check --metrics-listen / METRICS_LISTEN)", "addr", cfg.MetricsListen, "err", err)
		return 1
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("listening", "addr", d.addr.String(), "mode", cfg.Mode.String(), "cert_source", cfg.CertSource,
		"target", cfg.Default.String(), "routes", len(cfg.Routes), "domains", strings.Join(cfg.Domains, ","))

	pctx, stopProvisioning := context.WithCancel(ctx)
	var wg sync.WaitGroup
	d.startLifecycle(pctx, &wg)

	code = 0
	select {
	case <-ctx.Done():
		log.Info("draining", "timeout", cfg.DrainTimeout.String())
	case err := <-served:
		log.Error("serving stopped", "err", err)
		code = 1
	}
	stopProvisioning()
	// A fresh context: the signal context is already cancelled.
	dctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer cancel()
	if err := srv.Shutdown(dctx); err != nil {
		log.Warn("drain deadline reached; remaining connections were closed", "err", err)
	}
	if code == 0 {
		<-served
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	waitLifecycle(wctx, &wg, log)
	if msrv != nil {
		msrv.Shutdown(wctx)
		<-mserved
	}
	log.Info("stopped")
	return code
}

// startLifecycle starts the goroutines that keep the certificates and
// evidence current; wg owns them.
func (d *daemon) startLifecycle(pctx context.Context, wg *sync.WaitGroup) {
	wg.Go(func() { d.reloadLoop(pctx) })
	switch d.cfg.CertSource {
	case sourceStatic:
		d.changed()
	case sourceSelfSigned:
		wg.Go(func() { d.retry(pctx, stepAgent, d.identifySelfSigned) })
	case sourceACME:
		wg.Go(func() { d.evidenceLoop(pctx) })
		wg.Go(func() { d.provision(pctx) })
	}
}

// proxyConfig is the proxy's configuration: the daemon's certificates,
// challenges and evidence, and the operator's settings.
func (d *daemon) proxyConfig() proxy.Config {
	cfg, log := d.cfg, d.log
	pc := proxy.Config{
		Certs: &d.store, Challenges: &d.store, Mode: cfg.Mode, Default: cfg.Default, Routes: cfg.Routes,
		ALPN: cfg.ALPN, ProxyProtocol: cfg.ProxyProtocol, MaxConns: cfg.MaxConns, KeepUnderscoreHeaders: cfg.KeepUnderscoreHeaders,
		AccessLog: cfg.AccessLog, ProxyProtocolIn: d.ppIn, ProxyProtocolFrom: cfg.ProxyProtocolFrom,
		ConnectTimeout: cfg.ConnectTimeout, ClientTimeout: cfg.ClientTimeout, ServerTimeout: cfg.ServerTimeout,
		Logger: log.With("component", "proxy"),
	}
	switch {
	case cfg.CertSource == sourceACME && cfg.EvidenceServer:
		pc.Evidence = &d.evidenceHandler
	case cfg.CertSource == sourceSelfSigned:
		// GET /attestation is answered in-process, in tcp mode too.
		pc.Evidence, pc.LocalPaths = &d.attestation, []string{evidence.AttestationPath}
	}
	return pc
}

// serveMetrics serves /metrics, /healthz and /readyz on METRICS_LISTEN, if
// set; served receives Serve's result.
func (d *daemon) serveMetrics() (msrv *http.Server, served chan error, err error) {
	served = make(chan error, 1)
	if d.cfg.MetricsListen == "" {
		return nil, served, nil
	}
	mln, err := net.Listen("tcp", d.cfg.MetricsListen)
	if err != nil {
		return nil, nil, err
	}
	msrv = &http.Server{Handler: d.met.handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute, ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelDebug)}
	d.log.Info("metrics listening", "addr", mln.Addr().String())
	go func() { served <- msrv.Serve(mln) }()
	return msrv, served, nil
}

// waitLifecycle waits for the certificate goroutines until ctx ends.
func waitLifecycle(ctx context.Context, wg *sync.WaitGroup, log *slog.Logger) {
	// The lifecycle goroutines stop at once, except inside a CA or DNS call
	// already under way (lego's calls take no context); those are bounded by
	// their own timeouts, and waited for five seconds at most here.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		log.Warn("a certificate or DNS operation is still in flight at exit; it is abandoned")
	}
}

// lockDirs takes the state and evidence directories for this process, so a
// second instance on the same volume stops before it orders a certificate
// or overwrites a bundle. It returns the release function, or the exit
// status: 2 when a directory cannot be one (a path that is a file), 1 when
// another process holds it.
func (d *daemon) lockDirs() (func(), int) {
	if d.cfg.CertSource != sourceACME {
		return func() {}, 0
	}
	type dir struct {
		name, flag, path string
		perm             os.FileMode // the evidence is shared with the app; the state is not
	}
	dirs := []dir{{"STATE_DIR", "state-dir", filepath.Join(d.cfg.StateDir, "tee-ingress"), 0o700}}
	if d.cfg.EvidenceDir != "" {
		dirs = append(dirs, dir{"EVIDENCE_DIR", "evidence-dir", d.cfg.EvidenceDir, 0o755})
	}
	var locks []*dirlock.Lock
	release := func() {
		for _, l := range locks {
			l.Release()
		}
	}
	for _, dr := range dirs {
		if err := os.MkdirAll(dr.path, dr.perm); err != nil {
			release()
			d.log.Error("cannot use the directory (check "+dr.name+" / --"+dr.flag+")", "dir", dr.path, "err", err)
			return nil, 2
		}
		l, err := dirlock.Acquire(dr.path)
		if err != nil {
			release()
			hint := ""
			if dirlock.IsHeld(err) {
				hint = "; two instances must not share " + dr.name + ": give each its own volume"
			}
			d.log.Error("cannot lock "+dr.name+hint, "err", err)
			return nil, 1
		}
		locks = append(locks, l)
	}
	return release, 0
}

// prepare builds what the certificate source needs before the listener opens.
func (d *daemon) prepare() error {
	cfg := d.cfg
	switch cfg.CertSource {
	case sourceStatic:
		d.static = cfg.StaticCert
		return installStatic(&d.store, cfg.StaticCert)
	case sourceSelfSigned:
		cert, err := newSelfSigned(cfg.Domains, time.Now())
		if err != nil {
			return err
		}
		d.selfSigned = cert
		fp := fingerprint(cert.Leaf.Raw)
		d.log.Info("generated the self-signed certificate inside the TEE", "sha256", hex.EncodeToString(fp[:]),
			"names", strings.Join(cert.Leaf.DNSNames, ","), "not_after", cert.Leaf.NotAfter)
		name := selfSignedName
		if len(cfg.Domains) > 0 {
			name = cfg.Domains[0]
		}
		return d.store.Set(name, map[string]*tls.Certificate{name: cert})
	}

	// CERT_SOURCE=acme.
	if a, err := agent.New(agent.Options{SimulatorEndpoint: cfg.SimulatorEndpoint, Logger: d.log.With("component", "agent")}); err == nil {
		d.agent = a
	}
	if cfg.DNS != nil {
		build := d.env.dnsProvider
		if build == nil {
			build = dnscaa.NewProvider
		}
		pc := cfg.DNSProvider
		pc.Logger, pc.Observer = d.log.With("component", "dns"), d.met.observeDNS
		p, err := build(pc)
		if err != nil {
			return fmt.Errorf("dns provider: %w", err)
		}
		d.dns = p
	}
	resolver := d.resolver()
	solver, dnsOpts, err := d.solver(resolver)
	if err != nil {
		return err
	}
	var caa acme.CAAPinner
	if cfg.SetCAA && d.dns != nil {
		caa = &lockedPinner{mu: &d.dnsMu, p: &dnscaa.Pinner{Provider: d.dns, DelegationZone: cfg.DelegationZone,
			Apply: dnscaa.ApplyOptions{Zone: cfg.DNSZone, Resolver: resolver, Logger: d.log.With("component", "dns")}}}
	}
	keys, desc := d.accountKeys()
	d.log.Info("ACME account key", "source", desc)
	base := d.env.acmeTransport
	if base == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		if cfg.CARoots != nil {
			tr.TLSClientConfig = &tls.Config{RootCAs: cfg.CARoots, MinVersion: tls.VersionTLS12}
		}
		base = tr
	}
	var m *acme.Manager
	var shared acme.SharedStore // a nil *sharedStore would not be a nil interface
	if cfg.Cluster.Enabled() {
		d.shared = newSharedStore()
		shared = d.shared
	}
	m, err = acme.New(acme.Config{
		DirectoryURL: cfg.Directory, Email: cfg.Email, EAB: cfg.EAB, Keys: keys, StateDir: cfg.StateDir,
		HTTPClient: &http.Client{Timeout: 30 * time.Second, Transport: d.met.acmeTransport(base)},
		Challenge:  cfg.Challenge, Solver: solver, DNS01Options: dnsOpts, CAA: caa, Resolver: resolver,
		RenewBefore: cfg.RenewBefore, OnChange: d.install, OnEvent: d.onEvent, Logger: d.log.With("component", "acme"),
		Shared: shared,
	})
	if err != nil {
		return fielderr.Rename(err, acmeFields)
	}
	d.mgr = m
	return nil
}

// solver is the challenge solver of CHALLENGE_TYPE, with lego's options for
// dns-01 (nil for dns-persist-01: acme solves that itself).
func (d *daemon) solver(resolver *dnsread.Resolver) (challenge.Provider, []dns01.ChallengeOption, error) {
	cfg := d.cfg
	var solver challenge.Provider
	var dnsOpts []dns01.ChallengeOption
	switch cfg.Challenge {
	case acme.TLSALPN01:
		solver = &alpnSolver{store: &d.store}
	case acme.DNS01:
		opts := dnscaa.ChallengeOptions{Zone: cfg.DNSZone, DelegationZone: cfg.DelegationZone, Resolver: resolver,
			CheckServers: cfg.DNSResolvers, Logger: d.log.With("component", "dns-01")}
		cp, err := dnscaa.NewChallengeProvider(d.dns, opts)
		if err != nil {
			return nil, nil, fmt.Errorf("dns-01 solver: %w", fielderr.Rename(err, challengeFields))
		}
		solver = cp
		// The provider waits for propagation itself; lego's own check
		// would dial port 53 of the authoritative servers.
		dnsOpts = append(dnsOpts, dns01.WrapPreCheck(func(string, string, string, dns01.PreCheckFunc) (bool, error) { return true, nil }))
		if len(cfg.DNSResolvers) > 0 {
			// lego looks up the CNAME of _acme-challenge through its
			// package-wide resolvers.
			dnsOpts = append(dnsOpts, dns01.AddRecursiveNameservers(cfg.DNSResolvers))
		}
	}
	return solver, dnsOpts, nil
}

func (d *daemon) resolver() *dnsread.Resolver {
	if len(d.cfg.DNSResolvers) == 0 {
		return nil
	}
	return &dnsread.Resolver{Servers: d.cfg.DNSResolvers}
}

// accountKeys chooses the ACME account key source. auto means kms when a
// guest agent socket (other than the legacy tappd one) exists at start: the
// choice must not flip with a transient agent failure, since it decides the
// account URI that CAA pins.
func (d *daemon) accountKeys() (acme.KeySource, string) {
	mode := d.cfg.AccountKey
	if mode == keyAuto {
		mode = keyFile
		if d.agent != nil && !d.agent.Legacy() {
			mode = keyKMS
		}
	}
	if mode == keyKMS {
		return &kmsKeys{d: d}, "kms (derived from the dstack KMS: the same account for every instance of the app)"
	}
	path := filepath.Join(d.cfg.StateDir, "tee-ingress", "account-key.pem")
	return &acme.FileKeySource{Path: path}, "file " + path
}

// lockedPinner pins CAA under the daemon's DNS write lock.
type lockedPinner struct {
	mu *sync.Mutex
	p  acme.CAAPinner
}

var _ acme.CAAPinner = (*lockedPinner)(nil)

func (l *lockedPinner) PinCAA(ctx context.Context, domains []string, issuer, accountURI, method string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.p.PinCAA(ctx, domains, issuer, accountURI, method)
}

// kmsKeys is agent.KMSKeySource over an agent that may be found after
// start.
type kmsKeys struct {
	d   *daemon
	mu  sync.Mutex
	src *agent.KMSKeySource
}

var _ acme.KeySource = (*kmsKeys)(nil)

func (k *kmsKeys) AccountKey(ctx context.Context) (crypto.Signer, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.src == nil {
		a := k.d.getAgent()
		if a == nil {
			return nil, errors.New("ACME_ACCOUNT_KEY=kms: no dstack guest agent found yet (mount /var/run/dstack.sock)")
		}
		k.src = agent.NewKMSKeySource(a)
	}
	return k.src.AccountKey(ctx)
}

func (d *daemon) getAgent() *agent.Agent {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.agent
}

// retry runs f until it succeeds or ctx ends, with doubling, jittered waits
// between attempts. Each failure is logged and is step's problem in /readyz
// until f succeeds. It reports whether f succeeded.
func (d *daemon) retry(ctx context.Context, step string, f func(context.Context) error) bool {
	delay := retryInitial
	for attempt := 1; ; attempt++ {
		err := f(ctx)
		if err == nil {
			d.setProblem(step, "")
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		d.setProblem(step, err.Error())
		d.log.Error("start-up step failed; retrying", "step", step, "attempt", attempt, "retry_in", delay.String(), "err", err)
		if !wait.Sleep(ctx, jitter(delay)) {
			return false
		}
		delay = min(delay*2, retryMax)
	}
}

// jitter spreads d over [d/2, d] so that instances of one app do not retry
// in step.
func jitter(d time.Duration) time.Duration { return d/2 + rand.N(d/2+1) }

// provision is the ACME lifecycle: stored certificates first (served at
// once, with no network), then identity, account, DNS records, and the
// manager's loop that obtains what is missing and renews what is due.
func (d *daemon) provision(ctx context.Context) {
	sets := d.cfg.Groups
	// Ensure with a cancelled context returns a stored valid certificate
	// and fails before any network call otherwise.
	stored, cancel := context.WithCancel(ctx)
	cancel()
	for _, set := range sets {
		if c, err := d.mgr.Ensure(stored, set); err == nil {
			d.install(c)
		}
	}
	d.changed()

	var wg sync.WaitGroup
	defer wg.Wait()
	if !d.retry(ctx, stepAgent, d.identify) {
		return
	}
	if d.shared != nil {
		if !d.retry(ctx, stepCluster, d.openCluster) {
			return
		}
		defer d.shared.opened().Close()
	}
	if !d.retry(ctx, stepAccount, d.resolveAccount) {
		return
	}
	d.kickEvidence()
	if m := d.cfg.DNSSetup.Mode; m == dnsModeWait || m == dnsModeWebhook {
		// Ordering before the records are visible fails at the CA and
		// counts against its limits.
		if !d.retry(ctx, stepDNS, d.applyDNS) {
			return
		}
	} else if err := d.applyDNS(ctx); err != nil {
		if ctx.Err() != nil {
			return
		}
		d.setProblem(stepDNS, err.Error())
		d.log.Error("DNS records not written; retrying in the background while certificates proceed", "step", stepDNS, "err", err)
		wg.Go(func() {
			if wait.Sleep(ctx, jitter(retryInitial)) {
				d.retry(ctx, stepDNS, d.applyDNS)
			}
		})
	}
	d.mgr.Run(ctx, sets)
}

// findAgent resolves the guest agent (again, if it was absent at start).
func (d *daemon) findAgent() (*agent.Agent, error) {
	if a := d.getAgent(); a != nil {
		return a, nil
	}
	a, err := agent.New(agent.Options{SimulatorEndpoint: d.cfg.SimulatorEndpoint, Logger: d.log.With("component", "agent")})
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.agent = a
	d.mu.Unlock()
	return a, nil
}

// identify asks the guest agent who this app is and prepares the evidence
// publisher on it.
func (d *daemon) identify(ctx context.Context) error {
	a, err := d.findAgent()
	if err != nil {
		return err
	}
	var info *agent.AppInfo
	if a.Legacy() {
		d.log.Warn("only the legacy tappd socket was found: quotes work, but the app identity (app_id) is unknown, so the gateway routing TXT record cannot be written; mount /var/run/dstack.sock", "endpoint", a.Endpoint())
	} else {
		if info, err = a.Info(ctx); err != nil {
			return err
		}
	}
	d.warnSimulator(a)
	pub, err := evidence.NewPublisher(evidence.PublisherConfig{Quoter: a, Dir: d.cfg.EvidenceDir, Logger: d.log.With("component", "evidence")})
	if err != nil {
		return fmt.Errorf("preparing the evidence folder (check EVIDENCE_DIR=%s): %w", d.cfg.EvidenceDir, err)
	}
	h, err := evidence.NewHandler(evidence.HandlerConfig{Source: pub, Quoter: a, Logger: d.log.With("component", "evidence")})
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.info, d.publisher = info, pub
	d.mu.Unlock()
	d.evidenceHandler.set(h)
	if info != nil {
		d.log.Info("app identity", "app_id", hex.EncodeToString(info.AppID), "instance_id", hex.EncodeToString(info.InstanceID),
			"compose_hash", hex.EncodeToString(info.ComposeHash), "app_name", info.AppName, "agent", a.Endpoint())
	}
	return nil
}

func (d *daemon) warnSimulator(a *agent.Agent) {
	if a.IsSimulator() {
		d.log.Warn("NOT A TEE: quotes come from the dstack simulator (DSTACK_SIMULATOR_ENDPOINT); the evidence proves nothing", "endpoint", a.Endpoint())
	}
}

func (d *daemon) resolveAccount(ctx context.Context) error {
	reg, err := d.mgr.Account(ctx)
	if err != nil {
		// The CA is unreachable: the account record stored at the last
		// contact (checked against the current key) lets evidence for the
		// stored certificates go out now; the retry still needs the CA.
		d.mu.Lock()
		have := d.account != nil
		d.mu.Unlock()
		if js, uri, serr := d.mgr.StoredAccountJSON(ctx); serr == nil && !have {
			d.mu.Lock()
			d.account, d.accountURI = js, uri
			d.mu.Unlock()
			d.log.Warn("CA unreachable; publishing evidence with the stored account record", "uri", uri, "err", err)
			d.kickEvidence()
		}
		return err
	}
	js, err := d.mgr.AccountJSON(ctx)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.account, d.accountURI = js, reg.URI
	d.mu.Unlock()
	d.log.Info("ACME account", "uri", reg.URI, "directory", d.cfg.Directory)
	return nil
}

// applyDNS writes the gateway CNAME and routing TXT (GATEWAY_DOMAIN) and the
// CAA pin (SET_CAA). The CAA is written again before every order by the
// manager; writing it here too means a restart with stored certificates
// also repairs it.
func (d *daemon) applyDNS(ctx context.Context) error {
	cfg := d.cfg
	if cfg.GatewayDomain == "" && !cfg.SetCAA && cfg.Challenge != acme.DNSPersist01 {
		return nil
	}
	if d.shared != nil {
		// Replicas write the records one at a time: the first writes,
		// the others find them in place.
		lock, err := d.shared.Lock(ctx, "dns")
		if err != nil {
			return fmt.Errorf("taking the replicas' DNS lock: %w", err)
		}
		defer func() {
			uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			lock.Unlock(uctx)
			cancel()
		}()
	}
	plan, caa, err := d.dnsPlan()
	if err != nil {
		return err
	}
	if d.dns == nil {
		return d.operatorDNS(ctx, plan, caa)
	}
	opts := dnscaa.ApplyOptions{Zone: cfg.DNSZone, Resolver: d.resolver(), Logger: d.log.With("component", "dns")}
	d.dnsMu.Lock()
	changes, err := dnscaa.Apply(ctx, d.dns, plan, opts)
	d.dnsMu.Unlock()
	if err != nil {
		return fielderr.Rename(fielderr.Rename(err, planFields), challengeFields)
	}
	n := 0
	for _, c := range changes {
		if c.Action != dnscaa.ActionKeep {
			n++
		}
	}
	d.log.Info("DNS records in place", "records", len(plan.Records()), "changed", n)
	if cfg.DelegationZone != "" && cfg.DNSSetup.awaits() {
		return d.operatorDNS(ctx, plan, caa)
	}
	if cfg.DelegationZone != "" {
		missing, err := dnscaa.MissingOperatorRecords(ctx, d.resolver(), plan)
		if err != nil {
			d.log.Warn("could not check the operator's delegation CNAMEs", "err", err)
		}
		for _, r := range missing {
			d.log.Warn("delegation CNAME missing: create it in the served domain's zone", "record", r.String())
		}
	}
	return nil
}

// dnsPlan is the records this deployment needs, with the CAA policy that
// pins issuance to this account (whether or not SET_CAA writes it).
func (d *daemon) dnsPlan() (*dnscaa.Plan, dnsread.CAAPolicy, error) {
	cfg := d.cfg
	d.mu.Lock()
	info, accountURI := d.info, d.accountURI
	d.mu.Unlock()
	pc := dnscaa.PlanConfig{Domains: cfg.Domains, GatewayDomain: cfg.GatewayDomain, TXTPrefix: cfg.TXTPrefix,
		Port: d.addr.Port, DelegationZone: cfg.DelegationZone}
	if cfg.GatewayDomain != "" {
		switch {
		case info == nil:
			d.log.Error("the gateway routing TXT record is not written: the app identity is unknown (legacy agent); mount /var/run/dstack.sock")
		case cfg.Challenge == acme.TLSALPN01 && !cfg.Cluster.Enabled():
			// The CA must reach this very instance (DESIGN.md 5);
			// replicas share the challenge, so the app name keeps
			// the gateway's failover.
			pc.AppID = hex.EncodeToString(info.InstanceID)
		default:
			pc.AppID = hex.EncodeToString(info.AppID)
		}
	}
	issuer, err := d.mgr.CAAIssuer()
	if err != nil {
		return nil, dnsread.CAAPolicy{}, err
	}
	policy := dnsread.CAAPolicy{IssuerDomain: issuer, AccountURI: accountURI, ValidationMethods: []string{string(cfg.Challenge)}}
	if cfg.SetCAA {
		pc.CAA = &policy
	}
	if cfg.Challenge == acme.DNSPersist01 {
		pc.Persist = &dnsread.Persist{Issuer: issuer, AccountURI: accountURI}
	}
	plan, err := dnscaa.NewPlan(pc)
	return plan, policy, fielderr.Rename(err, planFields)
}

// install serves c (called at start for stored certificates and by the
// manager, under its lock, for every new one: it must not call the manager).
func (d *daemon) install(c *acme.Certificate) {
	d.mu.Lock()
	// Every name of the certificate's group maps to it: the store, the
	// evidence (cert-<name>.pem for each) and readiness look up by name.
	for _, name := range d.cfg.groupOf(c.Domains[0]) {
		d.certs[name] = c
	}
	d.certGen++
	certs := map[string]*tls.Certificate{}
	primary := ""
	for _, dom := range d.cfg.Domains {
		if cc := d.certs[dom]; cc != nil {
			certs[dom] = cc.TLS
			if primary == "" {
				primary = dom
			}
		}
	}
	err := d.store.Set(primary, certs)
	d.mu.Unlock()
	if err != nil {
		d.log.Error("cannot serve certificate", "domain", c.Domains[0], "err", err)
		return
	}
	d.log.Info("serving certificate", "domain", c.Domains[0], "serial", c.Leaf.SerialNumber.Text(16), "not_after", c.Leaf.NotAfter)
	d.kickEvidence()
	d.changed()
}

// onEvent follows the certificate manager: readiness on every status
// change, a new bundle when the shared history grew.
func (d *daemon) onEvent(e acme.Event) {
	switch e.Kind {
	case acme.EventStatus:
		d.changed()
	case acme.EventHistory:
		d.kickEvidence()
	}
}

func (d *daemon) kickEvidence() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// evidenceLoop publishes a bundle whenever the certificates or the account
// change, retrying failed publications; the previous bundle stays served
// meanwhile.
func (d *daemon) evidenceLoop(ctx context.Context) {
	delay := retryInitial
	var retryC <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.kick:
		case <-retryC:
		}
		retryC = nil
		in, gen, pub, why := d.bundleInput()
		all := len(in.Certs) == len(d.cfg.Domains)
		if why != "" {
			d.setProblem(stepEvidence, why)
			continue
		}
		_, err := pub.Publish(ctx, in)
		d.met.evidencePublished(err)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d.setProblem(stepEvidence, "publishing failed (the previous bundle stays): "+err.Error())
			d.log.Error("evidence not published; retrying", "retry_in", delay.String(), "err", err)
			retryC = time.After(jitter(delay))
			delay = min(delay*2, retryMax)
			continue
		}
		delay = retryInitial
		d.mu.Lock()
		d.publishedGen, d.published, d.publishedAll = gen, time.Now(), all
		d.mu.Unlock()
		d.setProblem(stepEvidence, "")
	}
}

// bundleInput is what the next bundle is built from, or why none can be.
func (d *daemon) bundleInput() (evidence.BundleInput, int, *evidence.Publisher, string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.publisher == nil:
		return evidence.BundleInput{}, 0, nil, "waiting for the dstack guest agent"
	case d.account == nil:
		return evidence.BundleInput{}, 0, nil, "waiting for the ACME account"
	}
	in := evidence.BundleInput{Account: d.account, Certs: map[string][]byte{}}
	for _, dom := range d.cfg.Domains {
		if c := d.certs[dom]; c != nil {
			in.Certs[dom] = c.ChainPEM
			if in.Primary == "" {
				in.Primary = dom
			}
		}
	}
	if in.Primary == "" {
		return evidence.BundleInput{}, 0, nil, "waiting for a certificate"
	}
	if d.mgr != nil {
		// Replicas: every certificate any of them obtained, as CT shows.
		for _, leaf := range d.mgr.SharedHistory() {
			in.History = append(in.History, evidence.NewHistoryEntry(leaf))
		}
	}
	return in, d.certGen, d.publisher, ""
}

func (d *daemon) setProblem(step, why string) {
	d.mu.Lock()
	if why == "" {
		delete(d.problems, step)
	} else {
		d.problems[step] = why
	}
	d.mu.Unlock()
	d.changed()
}

// readiness says whether the daemon serves what it is configured to serve,
// and lists what is wrong (also when ready: a DNS failure does not stop
// serving).
func (d *daemon) readiness() (bool, []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var lines []string
	ready := true
	switch d.cfg.CertSource {
	case sourceSelfSigned:
		if d.agent == nil || d.problems[stepAgent] != "" || d.attestation.h.Load() == nil {
			ready = false
		}
	case sourceACME:
		for _, dom := range d.cfg.Domains {
			if d.certs[dom] != nil {
				continue
			}
			ready = false
			line := "certificate " + dom + ": not obtained yet"
			if st := d.mgr.StatusOf(d.cfg.groupOf(dom)); st.LastError != "" {
				line += fmt.Sprintf(" (%d failed attempts; last: %s; next attempt %s)", st.Failures, st.LastError, st.NextCheck.Format(time.RFC3339))
			}
			lines = append(lines, line)
		}
		if !d.publishedAll {
			ready = false
			if d.problems[stepEvidence] == "" {
				lines = append(lines, "evidence: not published yet for every domain")
			}
		}
	}
	for _, step := range []string{stepAgent, stepCluster, stepAccount, stepDNS, stepEvidence} {
		if p := d.problems[step]; p != "" {
			lines = append(lines, step+": "+p)
		}
	}
	for _, dom := range d.cfg.Domains {
		if d.mgr == nil {
			break
		}
		st := d.mgr.StatusOf(d.cfg.groupOf(dom))
		if d.certs[dom] != nil && st.LastError != "" {
			lines = append(lines, fmt.Sprintf("renewal %s: %d failed attempts; last: %s", dom, st.Failures, st.LastError))
		}
		if st.Unsaved != "" {
			// Served, so still ready; a restart now would order again.
			lines = append(lines, fmt.Sprintf("certificate %s: held only in memory, not stored (%s)", dom, st.Unsaved))
		}
	}
	return ready, lines
}

// changed re-evaluates readiness; the first time the daemon is ready it says
// so in the log and calls environment.onReady.
func (d *daemon) changed() {
	ready, _ := d.readiness()
	d.mu.Lock()
	d.ready = ready
	d.mu.Unlock()
	if !ready {
		return
	}
	d.readyOnce.Do(func() {
		d.log.Info("ready", "addr", d.addr.String(), "took", time.Since(d.start).Round(time.Millisecond).String())
		if n, err := pageout.Executable(); err != nil {
			d.log.Debug("start-up pages not given back", "err", err)
		} else {
			d.log.Debug("start-up pages given back", "bytes", n)
		}
		if d.env.onReady != nil {
			d.env.onReady(d.addr)
		}
	})
}

// reloadLoop answers SIGHUP until ctx ends. A reload never stops the
// process: what fails to load is logged and the current certificate stays.
func (d *daemon) reloadLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.env.reload:
		}
		if d.cfg.CertSource != sourceStatic {
			d.log.Info("SIGHUP: nothing to reload (the configuration is read at start; certificates renew on their own)",
				"cert_source", d.cfg.CertSource)
			continue
		}
		if err := d.reloadStatic(); err != nil {
			d.log.Error("SIGHUP: reload failed; the current certificate is still served", "err", err)
		}
	}
}

// reloadStatic reads --cert and --key again and swaps them in.
func (d *daemon) reloadStatic() error {
	cert, err := tls.LoadX509KeyPair(d.cfg.CertFile, d.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("--cert %s and --key %s cannot be used: %w", d.cfg.CertFile, d.cfg.KeyFile, err)
	}
	if err := installStatic(&d.store, &cert); err != nil {
		return err
	}
	d.mu.Lock()
	d.static = &cert
	d.mu.Unlock()
	fp := fingerprint(cert.Leaf.Raw)
	d.log.Info("SIGHUP: reloaded the certificate", "cert", d.cfg.CertFile, "sha256", hex.EncodeToString(fp[:]),
		"names", strings.Join(cert.Leaf.DNSNames, ","), "not_after", cert.Leaf.NotAfter)
	d.changed()
	return nil
}

// installStatic serves one certificate from files for all its names.
func installStatic(store *proxy.CertStore, cert *tls.Certificate) error {
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
		certs[n] = cert
	}
	if len(certs) == 0 {
		certs[primary] = cert // no names (an IP certificate): served to everyone
	}
	if err := store.Set(primary, certs); err != nil {
		return fmt.Errorf("using --cert: %w", err)
	}
	return nil
}

// fixedLeaf is the leaf of the static or self-signed certificate, nil with
// ACME. Called with d.mu held or before goroutines start.
func (d *daemon) fixedLeaf() *x509.Certificate {
	switch {
	case d.static != nil && len(d.static.Leaf.DNSNames) > 0:
		return d.static.Leaf
	case d.selfSigned != nil:
		return d.selfSigned.Leaf
	}
	return nil
}
