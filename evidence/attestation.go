package evidence

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// AttestationPath is where the self-signed mode serves its attestation.
const AttestationPath = "/attestation"

// Attestation is the body of GET /attestation (DESIGN.md section 9): a
// GetQuote response whose report_data is SHA-256(leaf DER) || nonce (zeros
// without one), plus that fingerprint.
type Attestation struct {
	CertFingerprint string `json:"certFingerprint"`
	Quote           string `json:"quote"`
	EventLog        string `json:"event_log"`
	ReportData      string `json:"report_data"`
	VMConfig        string `json:"vm_config"`
}

// AttestationConfig configures the attestation handler.
type AttestationConfig struct {
	// Quoter produces the quotes. Required.
	Quoter Quoter
	// CertDER is the DER of the self-signed leaf served on this port. Required.
	CertDER []byte
	// Rate is the sustained rate of quotes with a nonce, for all clients
	// together. Zero: 2 per second.
	Rate rate.Limit
	// Burst is how many such quotes may come at once. Zero: 4.
	Burst int
	// Timeout bounds one call to the Quoter. Zero: 10 seconds.
	Timeout time.Duration
	// Logger receives quote failures. Nil: discard.
	Logger *slog.Logger
}

// AttestationHandler serves GET /attestation. The answer without a nonce is
// quoted once and then cached (the certificate does not change during the
// process); answers with a nonce are quoted fresh and rate-limited.
type AttestationHandler struct {
	quoter Quoter
	fp     [32]byte
	live   liveQuotes
	log    *slog.Logger

	mu     sync.Mutex
	cached []byte
}

var _ http.Handler = (*AttestationHandler)(nil)

// NewAttestationHandler checks cfg and returns the handler.
func NewAttestationHandler(cfg AttestationConfig) (*AttestationHandler, error) {
	if cfg.Quoter == nil {
		return nil, errors.New("attestation handler: Quoter is required")
	}
	if len(cfg.CertDER) == 0 {
		return nil, errors.New("attestation handler: CertDER is required")
	}
	live, err := newLiveQuotes(cfg.Rate, cfg.Burst, cfg.Timeout)
	if err != nil {
		return nil, fmt.Errorf("attestation handler: %w", err)
	}
	h := &AttestationHandler{quoter: cfg.Quoter, fp: sha256.Sum256(cfg.CertDER), live: live, log: cfg.Logger}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	return h, nil
}

func (h *AttestationHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != AttestationPath {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed: only GET and HEAD", http.StatusMethodNotAllowed)
		return
	}
	var body []byte
	if vals, ok := r.URL.Query()["nonce"]; ok {
		if len(vals) != 1 {
			http.Error(w, "give one nonce: /attestation?nonce=<64 hex characters>", http.StatusBadRequest)
			return
		}
		nonce, err := ParseNonce(vals[0])
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if !h.live.admit(w, r.RemoteAddr, "attestations with a nonce") {
			return
		}
		if body, err = h.attest(r.Context(), nonce); err != nil {
			h.log.Error("attestation quote failed", "err", err)
			http.Error(w, "quote unavailable", http.StatusBadGateway)
			return
		}
	} else {
		var err error
		if body, err = h.cachedAttestation(r.Context()); err != nil {
			h.log.Error("attestation quote failed", "err", err)
			http.Error(w, "quote unavailable", http.StatusBadGateway)
			return
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// cachedAttestation quotes fingerprint || zeros once; a failure is not cached.
func (h *AttestationHandler) cachedAttestation(ctx context.Context) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cached != nil {
		return h.cached, nil
	}
	b, err := h.attest(ctx, [32]byte{})
	if err != nil {
		return nil, err
	}
	h.cached = b
	return b, nil
}

func (h *AttestationHandler) attest(ctx context.Context, nonce [32]byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, h.live.timeout)
	defer cancel()
	rd := BundleReportData(h.fp, nonce)
	q, err := checkedQuote(ctx, h.quoter, rd)
	if err != nil {
		return nil, err
	}
	a := Attestation{
		CertFingerprint: hex.EncodeToString(h.fp[:]),
		Quote:           hex.EncodeToString(q.Quote),
		EventLog:        q.EventLog,
		ReportData:      hex.EncodeToString(rd[:]),
		VMConfig:        q.VMConfig,
	}
	b, err := json.Marshal(a)
	if err != nil {
		return nil, fmt.Errorf("encoding attestation: %w", err)
	}
	return append(b, '\n'), nil
}

// VerifyAttestation checks a GET /attestation body against the certificate
// of the connection it was fetched over (servedLeafDER: pin it, or the check
// proves nothing): certFingerprint is its SHA-256, the quote's report_data
// is that fingerprint || zeros (or || opts.Nonce), plus every quote check of
// VerifyQuote.
func VerifyAttestation(body, servedLeafDER []byte, opts VerifyOptions) []Check {
	fp := sha256.Sum256(servedLeafDER)
	c := Check{Name: CheckAttestationJSON, Status: Pass, Detail: "attestation parses"}
	var a Attestation
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&a); err != nil || dec.More() {
		if err == nil {
			err = errors.New("trailing data after the JSON object")
		}
		c.Status, c.Detail = Fail, "parsing attestation: "+err.Error()
		c.Hint = "GET /attestation must return {certFingerprint, quote, event_log, report_data, vm_config}"
		return []Check{c}
	}
	cs := []Check{c}
	f := Check{Name: CheckFingerprint, Want: hex.EncodeToString(fp[:]), Got: a.CertFingerprint}
	if normHex(a.CertFingerprint) == f.Want {
		f.Status, f.Detail = Pass, "certFingerprint is the SHA-256 of the certificate this connection presented"
	} else {
		f.Status, f.Detail = Fail, "certFingerprint is not the certificate this connection presented"
		f.Hint = "the attestation belongs to another server: a man in the middle, or a proxy terminating TLS"
	}
	cs = append(cs, f)
	var nonce [32]byte
	what := "the served certificate's SHA-256 followed by 32 zero bytes"
	if opts.Nonce != nil {
		nonce = *opts.Nonce
		what = "the served certificate's SHA-256 followed by the nonce " + hex.EncodeToString(nonce[:])
	}
	want := BundleReportData(fp, nonce)
	q, err := ParseQuoteJSON(body)
	return append(cs, quoteChecks(q, err, &want, what, opts, true)...)
}
