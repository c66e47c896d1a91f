package agent

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/Dstack-TEE/dstack/sdk/go/dstack"

	"github.com/tee-ingress/tee-ingress/evidence"
)

// agentSocketPaths are the guest-agent sockets dstack SDK v0.1.0 tries, in
// its order.
var agentSocketPaths = []string{
	"/var/run/dstack.sock",
	"/run/dstack.sock",
	"/var/run/dstack/dstack.sock",
	"/run/dstack/dstack.sock",
}

const (
	// legacyTappdSocket is where dstack before 0.5 served the tappd API.
	legacyTappdSocket = "/var/run/tappd.sock"
	// defaultAgentTimeout bounds each call when Options.Timeout is
	// zero. Quoting on real hardware takes a second or two.
	defaultAgentTimeout = 30 * time.Second
)

// ErrLegacy is returned by Agent.Info and Agent.GetKey when only the
// legacy tappd socket was found: tee-ingress uses it for quotes only.
var ErrLegacy = errors.New("only the legacy tappd agent was found, and tee-ingress uses it for quotes only")

// Options says where the dstack guest agent is. The zero value finds it
// the way the dstack SDK does, without reading the environment.
type Options struct {
	// Endpoint is the agent's address: a unix socket path, or an http:// or
	// https:// URL. Zero: SimulatorEndpoint, else discovery.
	Endpoint string
	// SimulatorEndpoint is the value of DSTACK_SIMULATOR_ENDPOINT. Packages do
	// not read the environment: cmd/ingress passes
	// os.Getenv("DSTACK_SIMULATOR_ENDPOINT"). When used, IsSimulator reports
	// true. Zero: no simulator.
	SimulatorEndpoint string
	// SocketPaths are tried in order when neither endpoint is set; the first
	// that is a unix socket wins. (The SDK takes any existing path; a
	// directory is what Docker leaves when it bind-mounts a socket missing on
	// the host, so it is skipped here.) Zero: /var/run/dstack.sock,
	// /run/dstack.sock, /var/run/dstack/dstack.sock, /run/dstack/dstack.sock.
	SocketPaths []string
	// LegacySocket is the tappd socket used, for quotes only, when none of
	// SocketPaths is a socket. Zero: /var/run/tappd.sock.
	LegacySocket string
	// Timeout bounds every call to the agent. Zero: 30 s.
	Timeout time.Duration
	// Logger receives the chosen endpoint and failed calls. Nil: discard.
	Logger *slog.Logger
}

// Agent talks to the dstack guest agent: identity, quotes and KMS keys.
//
// Info and GetKey go through the dstack SDK client. Quote does its own POST
// /GetQuote over the same endpoint with the SDK's wire format (JSON body
// {"report_data": hex}), because the SDK decodes the response and drops its
// bytes, and quote.json must publish them verbatim.
type Agent struct {
	endpoint  string
	baseURL   string
	simulator bool
	legacy    bool
	client    *http.Client
	sdk       *dstack.DstackClient
	timeout   time.Duration
	log       *slog.Logger
}

var _ evidence.Quoter = (*Agent)(nil)

// NewAgent resolves the agent's endpoint: opts.Endpoint; else
// opts.SimulatorEndpoint; else the first of opts.SocketPaths that is a
// socket; else opts.LegacySocket, for quotes only. It does not contact the
// agent.
func New(opts Options) (*Agent, error) {
	a := &Agent{timeout: opts.Timeout, log: opts.Logger}
	if a.timeout <= 0 {
		a.timeout = defaultAgentTimeout
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	paths := opts.SocketPaths
	if len(paths) == 0 {
		paths = agentSocketPaths
	}
	legacy := opts.LegacySocket
	if legacy == "" {
		legacy = legacyTappdSocket
	}
	switch {
	case opts.Endpoint != "":
		a.endpoint = opts.Endpoint
	case opts.SimulatorEndpoint != "":
		a.endpoint, a.simulator = opts.SimulatorEndpoint, true
	default:
		for _, p := range paths {
			if isSocket(p) {
				a.endpoint = p
				break
			}
		}
		if a.endpoint == "" && isSocket(legacy) {
			a.endpoint, a.legacy = legacy, true
		}
		if a.endpoint == "" {
			return nil, fmt.Errorf("finding the dstack guest agent: none of %s, nor the legacy %s, is a unix socket; "+
				"mount the agent socket into the container (volumes: - /var/run/dstack.sock:/var/run/dstack.sock), "+
				"or set DSTACK_SIMULATOR_ENDPOINT to a simulator's socket for development",
				strings.Join(paths, ", "), legacy)
		}
	}

	if strings.HasPrefix(a.endpoint, "http://") || strings.HasPrefix(a.endpoint, "https://") {
		// The SDK appends "/Method" to the endpoint as given.
		a.endpoint = strings.TrimRight(a.endpoint, "/")
		a.baseURL = a.endpoint
		// No proxy from the environment: the agent is local.
		a.client = &http.Client{Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
			TLSHandshakeTimeout: 10 * time.Second,
			MaxIdleConns:        2,
			IdleConnTimeout:     time.Minute,
		}}
	} else {
		sock := a.endpoint
		a.baseURL = "http://localhost"
		a.client = &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
			MaxIdleConns:    2,
			IdleConnTimeout: time.Minute,
		}}
	}
	if !a.legacy {
		a.sdk = dstack.NewDstackClient(dstack.WithEndpoint(a.endpoint), dstack.WithLogger(a.log))
	}
	a.log.Info("dstack guest agent", "endpoint", a.endpoint, "simulator", a.simulator, "legacy_tappd", a.legacy)
	return a, nil
}

func isSocket(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode()&os.ModeSocket != 0
}

// Endpoint returns the agent's socket path or URL.
func (a *Agent) Endpoint() string { return a.endpoint }

// IsSimulator reports whether the endpoint came from
// Options.SimulatorEndpoint (DSTACK_SIMULATOR_ENDPOINT): quotes are then
// not evidence of anything, and cmd/ingress should say so loudly.
func (a *Agent) IsSimulator() bool { return a.simulator }

// Legacy reports whether only the legacy tappd socket was found.
func (a *Agent) Legacy() bool { return a.legacy }

// Quote asks the agent for a TDX quote over reportData. Raw is the agent's
// response body verbatim. It fails closed unless the response is a GetQuote
// result (not an error body) for a TDX v4 quote whose report_data, and
// report_data field, equal reportData. The legacy tappd answer has no
// report_data field; ReportData is then read from the quote.
func (a *Agent) Quote(ctx context.Context, reportData [64]byte) (*evidence.Quote, error) {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	var req *http.Request
	var err error
	if a.legacy {
		req, err = http.NewRequestWithContext(ctx, http.MethodGet,
			a.baseURL+"/prpc/Tappd.RawQuote?report_data="+hex.EncodeToString(reportData[:]), nil)
	} else {
		body, _ := json.Marshal(map[string]string{"report_data": hex.EncodeToString(reportData[:])})
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, a.baseURL+"/GetQuote", bytes.NewReader(body))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("asking the guest agent at %s for a quote: %w", a.endpoint, err)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("asking the guest agent at %s for a quote: %w", a.endpoint, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, evidence.MaxQuoteJSONBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading the guest agent's quote from %s: %w", a.endpoint, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("asking the guest agent at %s for a quote: HTTP %d: %s", a.endpoint, resp.StatusCode, agentErrorText(body))
	}
	q, err := parseAgentQuote(body, reportData, a.legacy)
	if err != nil {
		return nil, fmt.Errorf("guest agent at %s: %w", a.endpoint, err)
	}
	return q, nil
}

// parseAgentQuote checks a GetQuote (or tappd RawQuote) response body for
// reportData and returns it as a Quote with Raw = body.
func parseAgentQuote(body []byte, reportData [64]byte, legacy bool) (*evidence.Quote, error) {
	var e struct {
		Error *string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != nil {
		return nil, fmt.Errorf("quote request failed: %s", agentSnippet(*e.Error))
	}
	q, err := evidence.ParseQuoteJSON(body)
	if err != nil {
		return nil, err
	}
	tq, err := evidence.ParseTDQuote(q.Quote)
	if err != nil {
		return nil, err
	}
	if tq.ReportData != reportData {
		return nil, fmt.Errorf("quote carries report_data %x, requested %x", tq.ReportData, reportData)
	}
	switch {
	case q.ReportData != nil && !bytes.Equal(q.ReportData, reportData[:]):
		return nil, fmt.Errorf("report_data field is %x, requested %x", q.ReportData, reportData)
	case q.ReportData == nil && !legacy:
		return nil, errors.New(`response has no "report_data" field; GetQuote always sends it`)
	case q.ReportData == nil:
		q.ReportData = bytes.Clone(reportData[:])
	}
	return q, nil
}

// agentErrorText extracts the message of an agent error body
// ({"error": "..."}), or shows the start of anything else.
func agentErrorText(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return agentSnippet(e.Error)
	}
	return agentSnippet(string(body))
}

// agentSnippet keeps text from the agent short and printable in errors.
func agentSnippet(s string) string {
	const max = 200
	if len(s) > max {
		s = s[:max] + "..."
	}
	return fmt.Sprintf("%q", s)
}

// AppInfo is the agent's Info answer: who this app is. Byte fields are
// decoded from the agent's hex.
type AppInfo struct {
	// AppID is the 20-byte app identity.
	AppID []byte
	// InstanceID is the 20-byte instance identity, empty for an app deployed
	// with no_instance_id.
	InstanceID []byte
	// ComposeHash is SHA-256 of the app's app-compose.json.
	ComposeHash []byte
	// AppName is the compose's name.
	AppName string
	// DeviceID identifies the host machine; may be empty.
	DeviceID []byte
	// OSImageHash is the measured OS image; empty when the KMS does not
	// measure it.
	OSImageHash []byte
	// KeyProviderInfo names the KMS (JSON text).
	KeyProviderInfo string
	// TCBInfo is tcb_info verbatim: JSON text with mrtd, rtmr0-3, the event
	// log and app_compose; empty when the app does not publish it.
	TCBInfo string
	// VMConfig is vm_config verbatim.
	VMConfig string
}

// Info returns the app's identity as the agent reports it.
func (a *Agent) Info(ctx context.Context) (*AppInfo, error) {
	if a.legacy {
		return nil, fmt.Errorf("asking %s for Info: %w", a.endpoint, ErrLegacy)
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	r, err := a.sdk.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("asking the guest agent at %s for Info: %w", a.endpoint, err)
	}
	info := &AppInfo{
		AppName:         r.AppName,
		KeyProviderInfo: r.KeyProviderInfo,
		TCBInfo:         r.TcbInfo,
		VMConfig:        r.VmConfig,
	}
	for _, f := range []struct {
		name  string
		hex   string
		dst   *[]byte
		sizes []int
	}{
		{"app_id", r.AppID, &info.AppID, []int{20}},
		{"instance_id", r.InstanceID, &info.InstanceID, []int{0, 20}},
		{"compose_hash", r.ComposeHash, &info.ComposeHash, []int{32}},
		{"device_id", r.DeviceID, &info.DeviceID, nil},
		{"os_image_hash", r.OsImageHash, &info.OSImageHash, nil},
	} {
		b, err := hex.DecodeString(f.hex)
		if err != nil {
			return nil, fmt.Errorf("guest agent at %s: Info field %q is not hex: %w", a.endpoint, f.name, err)
		}
		if f.sizes != nil && !slices.Contains(f.sizes, len(b)) {
			return nil, fmt.Errorf("guest agent at %s: Info field %q has %d bytes, want %v", a.endpoint, f.name, len(b), f.sizes)
		}
		*f.dst = b
	}
	return info, nil
}

// GetKey returns the 32-byte key the KMS derives for this app and path: the
// same for every instance of the app under one KMS. It asks for the agent's
// default algorithm (secp256k1); callers use the bytes as key material, not
// as a secp256k1 key.
func (a *Agent) GetKey(ctx context.Context, path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("getting a key from the guest agent: the key path is empty")
	}
	if a.legacy {
		return nil, fmt.Errorf("getting key %q from %s: %w", path, a.endpoint, ErrLegacy)
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	r, err := a.sdk.GetKey(ctx, path, "", "secp256k1")
	if err != nil {
		return nil, fmt.Errorf("getting key %q from the guest agent at %s: %w", path, a.endpoint, err)
	}
	key, err := r.DecodeKey()
	if err != nil {
		return nil, fmt.Errorf("getting key %q from the guest agent at %s: key is not hex: %w", path, a.endpoint, err)
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("getting key %q from the guest agent at %s: key has %d bytes, want 32", path, a.endpoint, len(key))
	}
	return key, nil
}
