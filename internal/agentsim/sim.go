package agentsim

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

//go:embed app-compose.json
var defaultCompose []byte

// Config configures a Simulator. The zero value is a working simulator with
// random keys and identities.
type Config struct {
	// AppID is the 20-byte app identity reported by Info and measured into
	// RTMR3 (event app-id). GetKey derives from it. Zero: derived from Seed.
	AppID []byte
	// InstanceID is the 20-byte instance identity (event instance-id).
	// Zero: derived from Seed.
	InstanceID []byte
	// ComposeJSON is the raw app-compose.json the simulated app was deployed
	// with; compose_hash is SHA-256 of exactly these bytes. It must be a JSON
	// object. Zero: a built-in compose for a tee-ingress demo app.
	ComposeJSON []byte
	// Stripped selects the event-log form of dstack 0.5.6 and later: boot
	// events carry only their digest, runtime events only their payload with
	// an empty digest. Zero: the full form of older agents, digest and
	// payload on every event.
	Stripped bool
	// Debug sets TD_ATTRIBUTES bit 0, the mark of a debug TD whose memory
	// the host can read: verifiers must reject such quotes. Zero: a
	// production TD.
	Debug bool
	// Seed makes the simulator reproducible: the CA chain's keys (so the root
	// public key), the attestation key, and the default AppID and InstanceID
	// all derive from it, so dev runs with the same seed trust the same root.
	// Certificate and quote signature bytes still differ between runs (ECDSA
	// signatures are randomized), which does not matter to a verifier: a root
	// saved from an earlier run with the same seed still verifies. At least 16
	// bytes when set. Zero: 32 random bytes.
	Seed []byte
	// KMSSecret stands in for the KMS root GetKey derives app keys from: the
	// key for (AppID, path) is the same in every simulator given the same
	// KMSSecret, as it is for every instance of an app under one KMS. Zero: a
	// fixed public constant.
	KMSSecret []byte
	// Logger receives one debug line per request. Nil: discard.
	Logger *slog.Logger
}

// Simulator is a dstack guest agent stand-in. Its methods are safe for
// concurrent use.
type Simulator struct {
	log         *slog.Logger
	appID       []byte
	instanceID  []byte
	compose     []byte
	composeHash []byte
	appName     string
	deviceID    []byte
	stripped    bool
	debug       bool
	kmsSecret   []byte
	keyProvider []byte
	vmConfig    string
	pki         *pki
	qeSection   []byte
	userData    []byte
	appCA       *x509.Certificate
	appCAKey    any
	base        []event // boot and runtime events up to system-ready

	mu        sync.Mutex
	appEvents []event // EmitEvent, after system-ready
	srv       *http.Server
	serving   sync.WaitGroup
	closed    bool
}

// New builds a Simulator: key material, certificate chain and event log.
func New(cfg Config) (*Simulator, error) {
	seed := cfg.Seed
	if len(seed) == 0 {
		seed = make([]byte, 32)
		if _, err := rand.Read(seed); err != nil {
			return nil, fmt.Errorf("generating a simulator seed: %w", err)
		}
	} else if len(seed) < 16 {
		return nil, fmt.Errorf("agentsim: Config.Seed is %d bytes; use at least 16, or leave it empty for a random seed", len(seed))
	}
	s := &Simulator{
		log:        cfg.Logger,
		appID:      cloneOr(cfg.AppID, derive(seed, "app-id", 20)),
		instanceID: cloneOr(cfg.InstanceID, derive(seed, "instance-id", 20)),
		compose:    cloneOr(cfg.ComposeJSON, defaultCompose),
		deviceID:   derive(seed, "device-id", 32),
		stripped:   cfg.Stripped,
		debug:      cfg.Debug,
		kmsSecret:  cloneOr(cfg.KMSSecret, defaultKMSSecret),
		userData:   append(derive(seed, "qe-user-data", 16), 0, 0, 0, 0),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if len(s.appID) != 20 {
		return nil, fmt.Errorf("agentsim: Config.AppID is %d bytes; dstack app IDs are 20 bytes (or leave it empty)", len(s.appID))
	}
	if len(s.instanceID) != 20 {
		return nil, fmt.Errorf("agentsim: Config.InstanceID is %d bytes; dstack instance IDs are 20 bytes (or leave it empty)", len(s.instanceID))
	}
	var compose struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(s.compose, &compose); err != nil {
		return nil, fmt.Errorf("agentsim: Config.ComposeJSON is not a JSON object (an app-compose.json): %w", err)
	}
	s.appName = compose.Name
	sum := sha256.Sum256(s.compose)
	s.composeHash = sum[:]

	var err error
	if s.pki, err = newPKI(seed); err != nil {
		return nil, err
	}
	if s.qeSection, err = s.pki.qeSection(); err != nil {
		return nil, err
	}
	if err := s.makeAppCA(); err != nil {
		return nil, err
	}
	if err := s.makeMeasuredConfig(); err != nil {
		return nil, err
	}
	s.base = append(bootEvents(),
		runtimeEvent("system-preparing", nil),
		runtimeEvent("app-id", s.appID),
		runtimeEvent("compose-hash", s.composeHash),
		runtimeEvent("instance-id", s.instanceID),
		runtimeEvent("boot-mr-done", nil),
		runtimeEvent("key-provider", s.keyProvider),
		runtimeEvent("system-ready", nil),
	)
	return s, nil
}

// makeMeasuredConfig builds the key-provider event (the simulated KMS
// root's public key) and the VM configuration the info endpoint reports.
func (s *Simulator) makeMeasuredConfig() error {
	kmsKey, err := deriveP256(s.kmsSecret, "kms-root")
	if err != nil {
		return err
	}
	kmsSPKI, err := x509.MarshalPKIXPublicKey(&kmsKey.PublicKey)
	if err != nil {
		return fmt.Errorf("encoding the simulated KMS key: %w", err)
	}
	s.keyProvider, err = marshalJSON(struct {
		Name string `json:"name"`
		ID   string `json:"id"`
	}{"kms", hex.EncodeToString(kmsSPKI)})
	if err != nil {
		return err
	}
	osImage := labelHash256("os-image")
	vm, err := marshalJSON(map[string]any{
		"spec_version":    1,
		"os_image_hash":   hex.EncodeToString(osImage),
		"cpu_count":       2,
		"memory_size":     2147483648,
		"qemu_version":    "simulated",
		"pci_hole64_size": 0,
		"hugepages":       false,
		"num_gpus":        0,
		"num_nvswitches":  0,
		"hotplug_off":     false,
		"image":           "dstack-simulator",
	})
	if err != nil {
		return err
	}
	s.vmConfig = string(vm)

	return nil
}

func cloneOr(b, def []byte) []byte {
	if len(b) == 0 {
		return append([]byte(nil), def...)
	}
	return append([]byte(nil), b...)
}

// AppID returns the 20-byte app ID.
func (s *Simulator) AppID() []byte { return bytes.Clone(s.appID) }

// InstanceID returns the 20-byte instance ID.
func (s *Simulator) InstanceID() []byte { return bytes.Clone(s.instanceID) }

// ComposeHash returns SHA-256 of the app-compose.json bytes.
func (s *Simulator) ComposeHash() []byte { return bytes.Clone(s.composeHash) }

// ComposeJSON returns the app-compose.json bytes the simulator reports.
func (s *Simulator) ComposeJSON() []byte { return bytes.Clone(s.compose) }

// RootPEM returns the simulator's root CA certificate in PEM. It is the only
// trust anchor under which its quotes verify.
func (s *Simulator) RootPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.pki.root.Raw})
}

// Roots returns a new pool holding only the simulator's root CA, for
// go-tdx-guest's verify.Options.TrustedRoots.
func (s *Simulator) Roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(s.pki.root)
	return p
}

// events returns the whole log: boot, runtime up to system-ready, then
// events emitted by the app.
func (s *Simulator) events() []event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append(append([]event(nil), s.base...), s.appEvents...)
}

// quoteResponse is GetQuote's answer.
type quoteResponse struct {
	Quote      string `json:"quote"`
	EventLog   string `json:"event_log"`
	ReportData string `json:"report_data"`
	VMConfig   string `json:"vm_config"`
}

// legacyQuoteResponse is tappd's RawQuote answer: no report_data, no vm_config.
type legacyQuoteResponse struct {
	Quote         string `json:"quote"`
	EventLog      string `json:"event_log"`
	HashAlgorithm string `json:"hash_algorithm"`
	Prefix        string `json:"prefix"`
}

// quote returns a signed quote for reportData and the event log it matches.
func (s *Simulator) quote(reportData [64]byte) (quote []byte, eventLog string, err error) {
	events := s.events()
	mrConfigID := make([]byte, 48)
	mrConfigID[0] = 0x01 // dstack: 01 || compose_hash
	copy(mrConfigID[1:], s.composeHash)
	quote, err = s.pki.buildQuote(tdInputs{
		userData:   s.userData,
		mrConfigID: mrConfigID,
		rtmrs:      replay(events),
		reportData: reportData,
		debug:      s.debug,
	}, s.qeSection)
	if err != nil {
		return nil, "", err
	}
	log, err := marshalJSON(wire(events, s.stripped))
	if err != nil {
		return nil, "", err
	}
	return quote, string(log), nil
}

// QuoteFor returns the GetQuote response body, as the socket would send it,
// for reportData.
func (s *Simulator) QuoteFor(reportData [64]byte) ([]byte, error) {
	quote, log, err := s.quote(reportData)
	if err != nil {
		return nil, err
	}
	return marshalJSON(quoteResponse{
		Quote:      hex.EncodeToString(quote),
		EventLog:   log,
		ReportData: hex.EncodeToString(reportData[:]),
		VMConfig:   s.vmConfig,
	})
}

// Serve listens on the unix socket socketPath and answers in the
// background; it returns once the socket accepts connections. A leftover
// socket file nobody listens on is replaced. Serve may be called for several
// paths (say dstack.sock and tappd.sock); Close stops them all.
func (s *Simulator) Serve(socketPath string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("agentsim: Serve after Close")
	}
	if err := removeStaleSocket(socketPath); err != nil {
		return err
	}
	ln, err := net.Listen("unix", socketPath)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", socketPath, err)
	}
	// The simulator's secrets are not secrets, but a socket handing out keys
	// should still not be world-writable.
	if err := os.Chmod(socketPath, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("restricting %s to its owner: %w", socketPath, err)
	}
	if s.srv == nil {
		s.srv = &http.Server{
			Handler:           s.Handler(),
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       60 * time.Second,
			ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		}
	}
	srv := s.srv
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("dstack simulator stopped serving", "socket", socketPath, "err", err)
		}
	}()
	s.log.Info("dstack simulator listening", "socket", socketPath)
	return nil
}

// removeStaleSocket deletes path if it is a unix socket nobody listens on,
// which is what a killed simulator leaves behind.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking socket path %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("socket path %s exists and is not a socket; choose another path", path)
	}
	d := net.Dialer{Timeout: time.Second}
	conn, err := d.Dial("unix", path)
	if err == nil {
		conn.Close()
		return fmt.Errorf("socket path %s is in use by another process; stop it or choose another path", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	return nil
}

// Close stops serving, waits for the serving goroutines and removes the
// socket files. It is safe to call more than once.
func (s *Simulator) Close() error {
	s.mu.Lock()
	s.closed = true
	srv := s.srv
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(ctx)
	if err != nil {
		err = errors.Join(err, srv.Close())
	}
	s.serving.Wait()
	return err
}

// marshalJSON encodes like serde_json: no HTML escaping, no trailing newline.
func marshalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encoding JSON: %w", err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// readAll is io.ReadAll with a bound.
func readAll(r io.Reader, max int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("request body larger than %d bytes", max)
	}
	return b, nil
}
