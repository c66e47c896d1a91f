package acme

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	legoacme "github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/acme/api"
	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/certificate"
	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/challenge/dns01"
	"github.com/go-acme/lego/v4/lego"
	"github.com/go-acme/lego/v4/registration"

	"github.com/tee-ingress/tee-ingress/dnsread"
	"github.com/tee-ingress/tee-ingress/internal/atomicfile"
	"github.com/tee-ingress/tee-ingress/internal/dnsname"
	"github.com/tee-ingress/tee-ingress/internal/fielderr"
)

// Let's Encrypt directories, and the issuer domain their CAA records name.
const (
	LetsEncryptProduction = lego.LEDirectoryProduction
	LetsEncryptStaging    = lego.LEDirectoryStaging
	letsEncryptCAA        = "letsencrypt.org"
)

// ChallengeType selects how the CA validates control of a domain.
type ChallengeType string

// The supported challenge types.
const (
	DNS01     ChallengeType = "dns-01"
	TLSALPN01 ChallengeType = "tls-alpn-01"
	// DNSPersist01 is draft-ietf-acme-dns-persist: a standing TXT record
	// at _validation-persist.<name> authorises this account; nothing is
	// written per order, so no DNS credential is needed.
	DNSPersist01 ChallengeType = "dns-persist-01"
)

// EAB is an external account binding, for CAs that require one.
type EAB struct {
	KID  string
	HMAC string // base64url, as the CA hands it out
}

// CAAPinner writes the CAA records that allow only this account, this issuer
// and this validation method to issue for domains. dnscaa implements it.
type CAAPinner interface {
	PinCAA(ctx context.Context, domains []string, issuer, accountURI string, method string) error
}

// Backoff bounds the delay between failed attempts; the delay doubles per
// failure, with jitter, from Initial up to Max.
type Backoff struct {
	Initial time.Duration // zero means one minute
	Max     time.Duration // zero means six hours
}

// Config configures a Manager. Fields marked required are checked by New.
type Config struct {
	// DirectoryURL is the ACME directory. Zero means Let's Encrypt production.
	DirectoryURL string
	// Email is the optional account contact; it becomes public in acme-account.json.
	Email string
	// EAB is the external account binding. Nil means none.
	EAB *EAB
	// Keys provides the account key. Required.
	Keys KeySource
	// StateDir holds accounts and certificates. Required.
	StateDir string
	// HTTPClient talks to the CA. Nil means a client with a 30 s timeout and
	// the system roots. lego's own default reads LEGO_CA_CERTIFICATES from
	// the environment, which only cmd/ingress may do, so it is never used.
	HTTPClient *http.Client

	// Challenge is the validation method. Zero means DNS01.
	Challenge ChallengeType
	// Solver answers Challenge: a DNS-01 provider (dnscaa) or the proxy's
	// tls-alpn-01 responder. Required, but for DNSPersist01.
	Solver challenge.Provider
	// Resolver looks up the dns-persist-01 records before each order. Nil
	// means the system's resolvers.
	Resolver *dnsread.Resolver
	// DNS01Options are passed to lego's DNS-01 solver, e.g. to replace its
	// propagation check when Solver already waits for propagation.
	DNS01Options []dns01.ChallengeOption

	// CAA, when set, pins issuance to this account before every order.
	// Nil means CAA records are not written.
	CAA CAAPinner
	// CAAIssuer is the issuer domain in CAA records. Zero means
	// letsencrypt.org for Let's Encrypt and the first of the directory's
	// caaIdentities otherwise.
	CAAIssuer string

	// RenewBefore is a fixed renewal window before expiry. Zero means the
	// CA's ARI window when it offers ARI, else when a third of the lifetime
	// is left.
	RenewBefore time.Duration
	// KeyType of certificate keys. Zero means ECDSA P-256.
	KeyType certcrypto.KeyType
	// Backoff after failed attempts. Zero values are documented on Backoff.
	Backoff Backoff
	// RecheckInterval is how often certificates are re-examined (ARI may move
	// a window). Zero means six hours.
	RecheckInterval time.Duration

	// OnChange is called, from the goroutine that obtained or installed
	// it, with every new certificate. Nil means no callback.
	OnChange func(*Certificate)
	// OnEvent is called with every change of a Status and of the shared
	// history, from the goroutine that made it, never under a lock of the
	// Manager; it must return quickly. Nil means no callback.
	OnEvent func(Event)

	// Shared is the store the replicas of this app share. Nil means a
	// single instance: nothing is shared and this one orders.
	Shared SharedStore
	// Logger receives progress and failures. Nil discards.
	Logger *slog.Logger
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
}

// Certificate is an issued certificate with its key, ready to serve.
type Certificate struct {
	// Domains are the names requested, in request order.
	Domains []string
	// ChainPEM is the full chain, leaf first. Public.
	ChainPEM []byte
	// Leaf is the parsed leaf.
	Leaf *x509.Certificate
	// TLS is the chain and private key for a tls.Config.
	TLS *tls.Certificate
}

// Manager owns the ACME account and the certificates of a set of domains.
// Its methods are safe for concurrent use.
type Manager struct {
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	local challenge.Provider // Config.Solver; Solver itself may be the shared one

	stateAt string // StateDir/tee-ingress/<CA>

	// op serialises ACME work (account setup, orders, ARI lookups) and is
	// held across network calls; methods named ...Locked need it. The
	// fields below it are written only under op.
	op     sync.Mutex
	client *lego.Client
	core   *api.Core // dns-persist-01's orders; made at the first
	user   *user
	dir    directoryMeta

	// mu guards what readers (the proxy, metrics, readiness) look at, so
	// they never wait for a network call.
	mu         sync.Mutex
	certs      map[string]*Certificate // by setFileName
	status     map[string]*Status
	accountURI string
	// held is the issuer lock while this replica orders (shared store).
	held StoreLock
	// history is the shared history as last read; issued is every
	// certificate this instance obtained, for appending to it.
	history, issued []*x509.Certificate
	// unsaved holds, by setFileName, the stored form of certificates the CA
	// issued that could not be written (a full or failing STATE_DIR): they
	// are served from memory and the write is retried, never reordered.
	unsaved map[string][]byte
}

// Status is the renewal state of one domain set, for logs and metrics.
type Status struct {
	Domains      []string
	NotAfter     time.Time
	NextCheck    time.Time
	Failures     int
	LastError    string
	LastRenewed  time.Time
	RateLimited  bool
	RenewalCount int
	// Unsaved is why the certificate held is not stored yet ("" when it
	// is): it is served from memory and the write is retried.
	Unsaved string
	// Leader is true while this replica is the elected issuer (it holds
	// the shared store's lock for the set).
	Leader bool
	// Orders counts orders this process placed at the CA, FailedTotal
	// the attempts that failed, since start.
	Orders, FailedTotal int
}

// EventKind says what an Event reports.
type EventKind int

// The kinds of Event.
const (
	// EventStatus: the Status of Event.Domains changed; Failed is set on
	// the one that counts a failed attempt.
	EventStatus EventKind = iota + 1
	// EventHistory: SharedHistory changed.
	EventHistory
)

// Event reports a change in what the Manager owns.
type Event struct {
	Kind    EventKind
	Domains []string
	Status  Status
	// Failed is true on the status event of a failed attempt.
	Failed bool
}

// New validates cfg and returns a Manager. It does not contact the CA.
func New(cfg Config) (*Manager, error) {
	if cfg.Keys == nil {
		return nil, &fielderr.Error{Field: "Keys", Problem: "no account key source", Accepted: "a KMS or file key source"}
	}
	if cfg.StateDir == "" {
		return nil, &fielderr.Error{Field: "StateDir", Problem: "no state directory", Accepted: "a writable directory"}
	}
	switch cfg.Challenge {
	case "":
		cfg.Challenge = DNS01
	case DNS01, TLSALPN01, DNSPersist01:
	default:
		return nil, &fielderr.Error{Field: "Challenge", Value: string(cfg.Challenge), Problem: "not a supported challenge type", Accepted: "dns-01, tls-alpn-01 or dns-persist-01"}
	}
	if cfg.Solver == nil && cfg.Challenge != DNSPersist01 {
		return nil, &fielderr.Error{Field: "Solver", Problem: "no challenge solver for " + string(cfg.Challenge), Accepted: "a solver, unless the challenge is dns-persist-01"}
	}
	if cfg.DirectoryURL == "" {
		cfg.DirectoryURL = LetsEncryptProduction
	}
	if !strings.HasPrefix(cfg.DirectoryURL, "https://") {
		return nil, &fielderr.Error{Field: "DirectoryURL", Value: cfg.DirectoryURL, Problem: "not https", Accepted: "an https:// ACME directory URL"}
	}
	if cfg.EAB != nil && (cfg.EAB.KID == "" || cfg.EAB.HMAC == "") {
		return nil, &fielderr.Error{Field: "EAB", Problem: "external account binding needs both a key id and an HMAC key", Accepted: "both KID and HMAC, or no EAB"}
	}
	if cfg.RenewBefore < 0 {
		return nil, &fielderr.Error{Field: "RenewBefore", Value: cfg.RenewBefore.String(), Problem: "negative renewal window", Accepted: "a positive duration"}
	}
	if cfg.KeyType == "" {
		cfg.KeyType = certcrypto.EC256
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.Backoff.Initial <= 0 {
		cfg.Backoff.Initial = time.Minute
	}
	if cfg.Backoff.Max <= 0 {
		cfg.Backoff.Max = 6 * time.Hour
	}
	if cfg.RecheckInterval <= 0 {
		cfg.RecheckInterval = 6 * time.Hour
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	m := &Manager{
		cfg:     cfg,
		log:     logger,
		now:     now,
		local:   cfg.Solver,
		certs:   map[string]*Certificate{},
		status:  map[string]*Status{},
		unsaved: map[string][]byte{},
		stateAt: filepath.Join(cfg.StateDir, "tee-ingress", caDirName(cfg.DirectoryURL)),
	}
	if cfg.Shared != nil && cfg.Challenge == TLSALPN01 {
		m.cfg.Solver = &sharedSolver{m: m}
	}
	return m, nil
}

// caDirName names the state folder of one CA, so certificates of a staging
// CA are never served once the operator switches to production.
func caDirName(directory string) string {
	name := strings.TrimPrefix(directory, "https://")
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-':
			return r
		}
		return '_'
	}, name)
}

// user is lego's view of the account.
type user struct {
	email string
	key   crypto.PrivateKey
	reg   *registration.Resource
}

func (u *user) GetEmail() string                        { return u.email }
func (u *user) GetRegistration() *registration.Resource { return u.reg }
func (u *user) GetPrivateKey() crypto.PrivateKey        { return u.key }

// directoryMeta is what we need from the directory that lego does not expose.
type directoryMeta struct {
	NewOrder    string `json:"newOrder"`
	RenewalInfo string `json:"renewalInfo"`
	Meta        struct {
		CAAIdentities           []string `json:"caaIdentities"`
		ExternalAccountRequired bool     `json:"externalAccountRequired"`
	} `json:"meta"`
}

// Account registers the account, or finds the existing one for the key, and
// returns its public registration. Later calls return the cached result.
func (m *Manager) Account(ctx context.Context) (*registration.Resource, error) {
	m.op.Lock()
	defer m.op.Unlock()
	if err := m.setupLocked(ctx); err != nil {
		return nil, err
	}
	return m.user.reg, nil
}

// AccountURI is the account URL that CAA records and verifiers compare.
// It is empty before Account succeeded.
func (m *Manager) AccountURI() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.accountURI
}

// AccountJSON is the public acme-account.json: lego's registration resource,
// {"body": {...}, "uri": "..."}. It never contains key material.
func (m *Manager) AccountJSON(ctx context.Context) ([]byte, error) {
	reg, err := m.Account(ctx)
	if err != nil {
		return nil, err
	}
	return PublicAccountJSON(reg)
}

// PublicAccountJSON encodes reg for publication, dropping the external account
// binding (a MAC over the key, of no use to a verifier).
func PublicAccountJSON(reg *registration.Resource) ([]byte, error) {
	pub := *reg
	pub.Body.ExternalAccountBinding = nil
	return json.MarshalIndent(&pub, "", "  ")
}

func (m *Manager) setupLocked(ctx context.Context) error {
	if m.client != nil {
		return nil
	}
	key, err := m.cfg.Keys.AccountKey(ctx)
	if err != nil {
		return fmt.Errorf("acme: account key: %w", err)
	}
	if err := m.fetchDirectoryLocked(ctx); err != nil {
		return err
	}
	u := &user{email: m.cfg.Email, key: key}
	client, err := m.newLegoClient(u)
	if err != nil {
		return err
	}
	reg, err := m.resolveAccount(client)
	if err != nil {
		return err
	}
	u.reg = reg
	// lego's client carries the account URL (kid) from construction; build
	// it again now that the registration is known.
	if client, err = m.newLegoClient(u); err != nil {
		return err
	}
	switch m.cfg.Challenge {
	case DNS01:
		err = client.Challenge.SetDNS01Provider(m.cfg.Solver, m.cfg.DNS01Options...)
	case TLSALPN01:
		err = client.Challenge.SetTLSALPN01Provider(m.cfg.Solver)
	}
	m.core = nil // the account may be new
	if err != nil {
		return fmt.Errorf("acme: setting %s solver: %w", m.cfg.Challenge, err)
	}
	if err := m.storeAccount(reg, key); err != nil {
		return err
	}
	m.client, m.user = client, u
	m.mu.Lock()
	m.accountURI = reg.URI
	m.mu.Unlock()
	return nil
}

// newLegoClient is the one lego client constructor: every client talks to
// the configured directory, as u, through the configured HTTP client.
func (m *Manager) newLegoClient(u *user) (*lego.Client, error) {
	client, err := lego.NewClient(&lego.Config{
		CADirURL:    m.cfg.DirectoryURL,
		User:        u,
		UserAgent:   "tee-ingress",
		HTTPClient:  m.cfg.HTTPClient,
		Certificate: lego.CertificateConfig{KeyType: m.cfg.KeyType, Timeout: 90 * time.Second},
	})
	if err != nil {
		return nil, fmt.Errorf("acme: connecting to %s: %w", m.cfg.DirectoryURL, err)
	}
	return client, nil
}

// resolveAccount finds the account of client's key, or registers it (with
// EAB when configured or required).
func (m *Manager) resolveAccount(client *lego.Client) (*registration.Resource, error) {
	reg, err := client.Registration.ResolveAccountByKey()
	if err != nil {
		if !isAccountDoesNotExist(err) {
			return nil, fmt.Errorf("acme: looking up account by key at %s: %w", m.cfg.DirectoryURL, err)
		}
		if m.dir.Meta.ExternalAccountRequired && m.cfg.EAB == nil {
			return nil, &fielderr.Error{Field: "EAB", Problem: m.cfg.DirectoryURL + " requires external account binding", Accepted: "the key id and HMAC key the CA issued"}
		}
		if m.cfg.EAB != nil {
			reg, err = client.Registration.RegisterWithExternalAccountBinding(registration.RegisterEABOptions{
				TermsOfServiceAgreed: true, Kid: m.cfg.EAB.KID, HmacEncoded: m.cfg.EAB.HMAC,
			})
		} else {
			reg, err = client.Registration.Register(registration.RegisterOptions{TermsOfServiceAgreed: true})
		}
		if err != nil {
			return nil, fmt.Errorf("acme: registering account at %s: %w", m.cfg.DirectoryURL, err)
		}
		m.log.Info("registered ACME account", "account", reg.URI)
	} else {
		m.log.Info("found existing ACME account for key", "account", reg.URI)
	}
	return reg, nil
}

// storeAccount writes the public account and the key's fingerprint to the
// state directory.
func (m *Manager) storeAccount(reg *registration.Resource, key crypto.Signer) error {
	if err := os.MkdirAll(m.stateAt, 0o700); err != nil {
		return fmt.Errorf("acme: creating state directory (check the state directory): %w", err)
	}
	pub, err := PublicAccountJSON(reg)
	if err != nil {
		return fmt.Errorf("acme: encoding account: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(m.stateAt, "account.json"), pub, 0o644); err != nil {
		return fmt.Errorf("acme: storing account (check the state directory): %w", err)
	}
	fp, err := keyFingerprint(key)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(m.stateAt, "account.key.sha256"), []byte(fp+"\n"), 0o644); err != nil {
		return fmt.Errorf("acme: storing account (check the state directory): %w", err)
	}
	return nil
}

// keyFingerprint is the hex SHA-256 of the key's public SPKI DER.
func keyFingerprint(key crypto.Signer) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return "", fmt.Errorf("acme: encoding account public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// ErrNoStoredAccount is returned by StoredAccountJSON when the state
// directory holds no account record for the current key.
var ErrNoStoredAccount = errors.New("no stored account for this key")

// StoredAccountJSON returns the public account record (as AccountJSON) that
// the last successful Account stored, without contacting the CA, provided it
// belongs to the current account key. It lets a restart publish evidence
// while the CA is unreachable; Account is still needed before any order.
func (m *Manager) StoredAccountJSON(ctx context.Context) ([]byte, string, error) {
	key, err := m.cfg.Keys.AccountKey(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("acme: account key: %w", err)
	}
	fp, err := keyFingerprint(key)
	if err != nil {
		return nil, "", err
	}
	stored, err := os.ReadFile(filepath.Join(m.stateAt, "account.key.sha256"))
	if errors.Is(err, fs.ErrNotExist) || err == nil && strings.TrimSpace(string(stored)) != fp {
		return nil, "", ErrNoStoredAccount
	}
	if err != nil {
		return nil, "", fmt.Errorf("acme: reading stored account: %w", err)
	}
	pub, err := os.ReadFile(filepath.Join(m.stateAt, "account.json"))
	if err != nil {
		return nil, "", fmt.Errorf("acme: reading stored account: %w", err)
	}
	var reg registration.Resource
	if err := json.Unmarshal(pub, &reg); err != nil || !strings.HasPrefix(reg.URI, "https://") {
		return nil, "", fmt.Errorf("acme: stored account %s is damaged (it is rewritten at the next contact with the CA)", filepath.Join(m.stateAt, "account.json"))
	}
	return pub, reg.URI, nil
}

func isAccountDoesNotExist(err error) bool {
	var pd *legoacme.ProblemDetails
	return errors.As(err, &pd) && pd.Type == "urn:ietf:params:acme:error:accountDoesNotExist"
}

func (m *Manager) fetchDirectoryLocked(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.cfg.DirectoryURL, nil)
	if err != nil {
		return fmt.Errorf("acme: directory %q: %w", m.cfg.DirectoryURL, err)
	}
	resp, err := m.cfg.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("acme: fetching directory %s: %w", m.cfg.DirectoryURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("acme: fetching directory %s: HTTP %d", m.cfg.DirectoryURL, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("acme: reading directory %s: %w", m.cfg.DirectoryURL, err)
	}
	if err := json.Unmarshal(body, &m.dir); err != nil {
		return fmt.Errorf("acme: directory %s is not ACME JSON: %w", m.cfg.DirectoryURL, err)
	}
	return nil
}

// CAAIssuer is the issuer domain CAA records must name for this CA.
func (m *Manager) CAAIssuer() (string, error) {
	m.op.Lock()
	defer m.op.Unlock()
	return m.caaIssuerLocked()
}

func (m *Manager) caaIssuerLocked() (string, error) {
	if m.cfg.CAAIssuer != "" {
		return m.cfg.CAAIssuer, nil
	}
	if m.cfg.DirectoryURL == LetsEncryptProduction || m.cfg.DirectoryURL == LetsEncryptStaging {
		return letsEncryptCAA, nil
	}
	if len(m.dir.Meta.CAAIdentities) > 0 {
		return m.dir.Meta.CAAIdentities[0], nil
	}
	return "", &fielderr.Error{Field: "CAA", Problem: "the CA at " + m.cfg.DirectoryURL + " names no caaIdentities, so the CAA issuer domain is unknown", Accepted: "a CAA issuer domain (CAAIssuer), or no CAA"}
}

// Ensure returns a certificate for exactly domains: the stored one when it is
// valid for this CA and these names, else a new one from the CA. A restart
// with a valid stored certificate therefore sends nothing to the CA.
func (m *Manager) Ensure(ctx context.Context, domains []string) (*Certificate, error) {
	if err := checkDomains(domains); err != nil {
		return nil, err
	}
	if m.cfg.Challenge == TLSALPN01 {
		for _, d := range domains {
			if strings.HasPrefix(d, "*.") {
				return nil, &fielderr.Error{Field: "Challenge", Value: string(TLSALPN01), Problem: "cannot validate the wildcard " + d, Accepted: "dns-01 or dns-persist-01 for wildcards"}
			}
		}
	}
	m.op.Lock()
	defer m.op.Unlock()
	if c := m.Current(domains); c != nil && slices.Equal(c.Domains, domains) && m.now().Before(c.Leaf.NotAfter) {
		return c, nil
	}
	c, err := m.load(domains)
	switch {
	case err == nil && m.now().Before(c.Leaf.NotAfter):
		m.put(domains, c, false)
		m.log.Info("using stored certificate", "domain", domains[0], "not_after", c.Leaf.NotAfter)
		return c, nil
	case err == nil:
		m.log.Info("stored certificate expired, obtaining a new one", "domain", domains[0])
	case errors.Is(err, fs.ErrNotExist):
	case errors.Is(err, errStoredMismatch):
		m.log.Info("stored certificate is for other names or another CA, obtaining a new one", "domain", domains[0], "reason", err)
	default:
		m.log.Warn("stored certificate unusable, obtaining a new one", "domain", domains[0], "error", err)
	}
	return m.obtainLocked(ctx, domains, nil)
}

// Current returns the certificate held for domains, or nil.
func (m *Manager) Current(domains []string) *Certificate {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.certs[setFileName(domains)]
}

// StatusOf returns a copy of the renewal state of domains.
func (m *Manager) StatusOf(domains []string) Status {
	var st Status
	m.updateStatus(domains, func(s *Status) { st = *s })
	return st
}

// updateStatus runs f on the status of domains under mu, and reports a
// change.
func (m *Manager) updateStatus(domains []string, f func(*Status)) {
	m.mu.Lock()
	name := setFileName(domains)
	s := m.status[name]
	if s == nil {
		s = &Status{Domains: slices.Clone(domains)}
		m.status[name] = s
	}
	before := *s
	f(s)
	after := *s
	m.mu.Unlock()
	if !statusEqual(before, after) {
		m.emit(Event{Kind: EventStatus, Domains: after.Domains, Status: after, Failed: after.FailedTotal > before.FailedTotal})
	}
}

func statusEqual(a, b Status) bool {
	return a.NotAfter.Equal(b.NotAfter) && a.NextCheck.Equal(b.NextCheck) && a.Failures == b.Failures &&
		a.LastError == b.LastError && a.LastRenewed.Equal(b.LastRenewed) && a.RateLimited == b.RateLimited &&
		a.RenewalCount == b.RenewalCount && a.Unsaved == b.Unsaved && a.Leader == b.Leader &&
		a.Orders == b.Orders && a.FailedTotal == b.FailedTotal
}

func (m *Manager) emit(e Event) {
	if m.cfg.OnEvent != nil {
		m.cfg.OnEvent(e)
	}
}

// put makes c the certificate held for domains; renewed counts an issuance.
func (m *Manager) put(domains []string, c *Certificate, renewed bool) {
	m.mu.Lock()
	m.certs[setFileName(domains)] = c
	m.mu.Unlock()
	m.updateStatus(domains, func(s *Status) {
		s.NotAfter = c.Leaf.NotAfter
		if renewed {
			s.LastRenewed = m.now()
			s.RenewalCount++
		}
	})
}

var errStoredMismatch = errors.New("stored certificate does not match")

func (m *Manager) load(domains []string) (*Certificate, error) {
	path := filepath.Join(m.stateAt, "certs", setFileName(domains))
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := m.parseStored(domains, data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// parseStored reads the stored form of domains' certificate (a file, or a
// value of the shared store).
func (m *Manager) parseStored(domains []string, data []byte) (*Certificate, error) {
	var st storedCert
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("parsing the stored certificate: %w", err)
	}
	if !slices.Equal(st.Domains, domains) {
		return nil, fmt.Errorf("%w: it names %v, configured %v", errStoredMismatch, st.Domains, domains)
	}
	if st.Directory != m.cfg.DirectoryURL {
		return nil, fmt.Errorf("%w: it is from %s, configured %s", errStoredMismatch, st.Directory, m.cfg.DirectoryURL)
	}
	return newCertificate(domains, []byte(st.ChainPEM), []byte(st.KeyPEM))
}

func newCertificate(domains []string, chainPEM, keyPEM []byte) (*Certificate, error) {
	tc, err := tls.X509KeyPair(chainPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate and key do not form a pair: %w", err)
	}
	leaf := tc.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(tc.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parsing leaf: %w", err)
		}
		tc.Leaf = leaf
	}
	for _, d := range domains {
		if err := leaf.VerifyHostname(strings.Replace(d, "*", "x", 1)); err != nil {
			return nil, fmt.Errorf("leaf does not cover %s: %w", d, err)
		}
	}
	return &Certificate{Domains: slices.Clone(domains), ChainPEM: chainPEM, Leaf: leaf, TLS: &tc}, nil
}

// orderRefused says whether err is the CA refusing the new-order request
// itself, for a reason other than a rate limit: nothing was validated yet,
// so ordering again costs one request.
func (m *Manager) orderRefused(err error) bool {
	var pd *legoacme.ProblemDetails
	if !errors.As(err, &pd) || m.dir.NewOrder == "" || pd.URL != m.dir.NewOrder {
		return false
	}
	var limited *legoacme.RateLimitedError
	return !errors.As(err, &limited)
}

// obtainLocked gets a new certificate for domains: from the CA, or, with a
// shared store, from whichever replica is elected to order.
func (m *Manager) obtainLocked(ctx context.Context, domains []string, replacing *Certificate) (*Certificate, error) {
	if err := m.setupLocked(ctx); err != nil {
		return nil, err
	}
	if m.cfg.Shared != nil {
		return m.obtainSharedLocked(ctx, domains, replacing)
	}
	c, _, err := m.orderLocked(ctx, domains, replacing)
	return c, err
}

// orderLocked pins CAA, orders, stores and installs a certificate; it
// returns the stored form too, for the shared store.
func (m *Manager) orderLocked(ctx context.Context, domains []string, replacing *Certificate) (*Certificate, []byte, error) {
	if m.cfg.CAA != nil {
		issuer, err := m.caaIssuerLocked()
		if err != nil {
			return nil, nil, err
		}
		if err := m.cfg.CAA.PinCAA(ctx, domains, issuer, m.user.reg.URI, string(m.cfg.Challenge)); err != nil {
			return nil, nil, fmt.Errorf("acme: %s: pinning CAA before ordering: %w", domains[0], err)
		}
	}
	if err := m.checkRoom(); err != nil {
		return nil, nil, err
	}
	if m.cfg.Challenge == DNSPersist01 {
		if err := m.checkPersistLocked(ctx, domains); err != nil {
			return nil, nil, err
		}
	}
	req := certificate.ObtainRequest{Domains: domains, Bundle: true}
	if replacing != nil && m.dir.RenewalInfo != "" {
		if id, err := certificate.MakeARICertID(replacing.Leaf); err == nil {
			req.ReplacesCertID = id
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	start := m.now()
	m.updateStatus(domains, func(s *Status) { s.Orders++ })
	res, err := m.obtain(ctx, req)
	if err != nil && req.ReplacesCertID != "" && m.orderRefused(err) {
		// "replaces" only buys an exemption from rate limits; a CA that
		// will not accept it must not stop the renewal. Seen: another
		// account's certificate after ACME_ACCOUNT_KEY changed (Let's
		// Encrypt, pebble: unauthorized), an issuer the CA does not know
		// (Let's Encrypt: malformed), a serial the CA files differently
		// (pebble: serverInternal). lego already retries alreadyReplaced.
		m.log.Warn("the CA refused the renewal order that names the certificate it replaces; ordering without it",
			"domain", domains[0], "replaces", req.ReplacesCertID, "err", err)
		req.ReplacesCertID = ""
		m.updateStatus(domains, func(s *Status) { s.Orders++ })
		res, err = m.obtain(ctx, req)
	}
	if err != nil {
		return nil, nil, &ObtainError{Domains: domains, Err: err}
	}
	c, err := newCertificate(domains, res.Certificate, res.PrivateKey)
	if err != nil {
		return nil, nil, fmt.Errorf("acme: %s: CA returned an unusable certificate: %w", domains[0], err)
	}
	st := storedCert{Domains: domains, Directory: m.cfg.DirectoryURL, CertURL: res.CertURL,
		ChainPEM: string(res.Certificate), KeyPEM: string(res.PrivateKey)}
	data, err := json.Marshal(&st)
	if err != nil {
		return nil, nil, fmt.Errorf("acme: encoding certificate: %w", err)
	}
	// The CA has issued: from here on the certificate is used whatever
	// the disk says. Dropping it would cost another order, counted
	// against the CA's duplicate limit and logged in CT, for nothing.
	if err := m.store(domains, data); err != nil {
		m.log.Error("storing the new certificate failed; it is served from memory and the write is retried (free space in the state directory)",
			"domain", domains[0], "err", err)
	}
	m.put(domains, c, true)
	m.noteIssued(c)
	m.log.Info("obtained certificate", "domain", domains[0], "names", strings.Join(domains, ","),
		"serial", c.Leaf.SerialNumber.Text(16), "not_after", c.Leaf.NotAfter, "took", m.now().Sub(start).Round(time.Millisecond),
		"replaces", req.ReplacesCertID)
	if m.cfg.OnChange != nil {
		m.cfg.OnChange(c)
	}
	return c, data, nil
}

// obtain places and completes one order.
func (m *Manager) obtain(ctx context.Context, req certificate.ObtainRequest) (*certificate.Resource, error) {
	if m.cfg.Challenge == DNSPersist01 {
		return m.obtainPersist(ctx, req)
	}
	return m.client.Certificate.Obtain(req)
}

// store writes the stored form of domains' certificate, or keeps it in
// unsaved for a later retry (flushUnsaved) when that fails.
func (m *Manager) store(domains []string, data []byte) error {
	name := setFileName(domains)
	err := m.writeCert(name, data)
	m.mu.Lock()
	if err != nil {
		m.unsaved[name] = data
	} else {
		delete(m.unsaved, name)
	}
	m.mu.Unlock()
	m.updateStatus(domains, func(s *Status) {
		s.Unsaved = ""
		if err != nil {
			s.Unsaved = err.Error()
		}
	})
	return err
}

func (m *Manager) writeCert(name string, data []byte) error {
	dir := filepath.Join(m.stateAt, "certs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("acme: creating %s (check the state directory): %w", dir, err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
		return fmt.Errorf("acme: storing %s (check the state directory): %w", filepath.Join(dir, name), err)
	}
	return nil
}

// flushUnsaved retries the write of domains' certificate if it is held
// only in memory; it reports whether it still is.
func (m *Manager) flushUnsaved(domains []string) bool {
	m.mu.Lock()
	data, ok := m.unsaved[setFileName(domains)]
	m.mu.Unlock()
	if !ok {
		return false
	}
	if err := m.store(domains, data); err != nil {
		m.log.Warn("the certificate is still held only in memory; retrying its write", "domain", domains[0], "err", err)
		return true
	}
	m.log.Info("stored the certificate held in memory", "domain", domains[0])
	return false
}

// minFreeBytes is the room an order needs in STATE_DIR: a stored
// certificate is a few KiB; the rest is margin.
const minFreeBytes = 256 << 10

// checkRoom writes, syncs and removes minFreeBytes in the certificate
// folder, so that an order is placed only when its result can be kept.
func (m *Manager) checkRoom() error {
	dir := filepath.Join(m.stateAt, "certs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("acme: creating %s (check the state directory): %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".room-*")
	if err != nil {
		return fmt.Errorf("acme: the state directory is not writable, not ordering: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = f.Write(make([]byte, minFreeBytes))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("acme: the state directory %s has no room for %d KiB, not ordering (free space there): %w", dir, minFreeBytes>>10, err)
	}
	return nil
}

// ObtainError is a failed order for a domain set.
type ObtainError struct {
	Domains []string
	Err     error
}

func (e *ObtainError) Error() string {
	return fmt.Sprintf("acme: obtaining certificate for %s: %v", strings.Join(e.Domains, ","), e.Err)
}

func (e *ObtainError) Unwrap() error { return e.Err }

// RetryAfter is how long the CA asked us to wait, or zero.
func (e *ObtainError) RetryAfter(now time.Time) time.Duration {
	var rl *legoacme.RateLimitedError
	if !errors.As(e.Err, &rl) || rl.RetryAfter == "" {
		return 0
	}
	if d, err := parseRetryAfter(rl.RetryAfter, now); err == nil {
		return d
	}
	return 0
}

// IsRateLimited reports whether err is a rate-limit refusal from the CA.
func IsRateLimited(err error) bool {
	var rl *legoacme.RateLimitedError
	return errors.As(err, &rl)
}

func parseRetryAfter(v string, now time.Time) (time.Duration, error) {
	if secs, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
		return time.Duration(secs) * time.Second, nil
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, err
	}
	return t.Sub(now), nil
}

// checkDomains rejects what no CA would issue for, before anything is sent.
func checkDomains(domains []string) error {
	if len(domains) == 0 {
		return errors.New("acme: no domains")
	}
	seen := map[string]bool{}
	for _, d := range domains {
		if err := CheckDomainName(d); err != nil {
			return err
		}
		if seen[d] {
			return fmt.Errorf("acme: domain %q listed twice", d)
		}
		seen[d] = true
	}
	return nil
}

// CheckDomainName accepts a domain in the form certificates carry it
// (dnsname.Canonical): lowercase, xn-- labels, no trailing dot, at least two
// labels, "*." only as the whole first label.
func CheckDomainName(d string) error {
	return dnsname.Canonical(d)
}
