package dnssetup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/internal/fielderr"
	"github.com/tee-ingress/tee-ingress/internal/wait"
)

// Quoter returns the guest agent's answer to GetQuote for reportData, as
// it sent it (JSON with the quote and the event log).
type Quoter interface {
	RawQuote(ctx context.Context, reportData [64]byte) ([]byte, error)
}

// Webhook posts the records to the operator's endpoint (DNS_WEBHOOK_*).
type Webhook struct {
	URL string // required
	// Token keys the HMAC-SHA256 over the payload. Empty: unsigned, which
	// Send refuses unless AllowUnsigned.
	Token         string
	AllowUnsigned bool
	// Quoter adds a TDX quote over SHA-256(payload). Nil: none.
	Quoter Quoter
	// Timeout bounds each attempt (zero: 15 s); Attempts is how many are
	// made (zero: 5), the waits between them doubling from one second.
	Timeout  time.Duration
	Attempts int
	Client   *http.Client // nil: a plain client
	Logger   *slog.Logger // nil discards
}

// Payload and Envelope are dstack-ingress 2.3's (evidence.VerifyWebhook
// is the receiver's side).
type (
	Payload  = evidence.WebhookPayload
	Envelope = evidence.WebhookEnvelope
)

// Seal builds the envelope for p: the payload with keys sorted and no
// spaces, its HMAC, and the quote whose report_data is SHA-256(payload).
func (w *Webhook) Seal(ctx context.Context, p Payload) (*Envelope, error) {
	body, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	var sorted map[string]any // as dstack-ingress writes it: keys in order
	if err := json.Unmarshal(body, &sorted); err != nil {
		return nil, err
	}
	if body, err = json.Marshal(sorted); err != nil {
		return nil, err
	}
	env := &Envelope{Payload: string(body)}
	if w.Token != "" {
		env.HMACSHA256 = evidence.SignWebhook(env.Payload, w.Token)
	}
	if w.Quoter != nil {
		var rd [64]byte
		sum := sha256.Sum256(body)
		copy(rd[:], sum[:])
		raw, err := w.Quoter.RawQuote(ctx, rd)
		if err != nil {
			return nil, fmt.Errorf("quoting the webhook payload: %w", err)
		}
		if env.Attestation, err = withReportData(raw, hex.EncodeToString(sum[:])); err != nil {
			return nil, err
		}
	}
	return env, nil
}

// withReportData adds "report_data" (hex SHA-256 of the payload) to the
// agent's answer, as dstack-ingress does.
func withReportData(raw []byte, rd string) (json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("the guest agent's quote is not a JSON object: %w", err)
	}
	m["report_data"], _ = json.Marshal(rd)
	return json.Marshal(m)
}

// Send posts the envelope, retrying failures (network errors, non-2xx
// answers) with backoff; the error says what the last attempt got.
func (w *Webhook) Send(ctx context.Context, p Payload) error {
	if w.Token == "" && !w.AllowUnsigned {
		return &fielderr.Error{Field: "Token", Problem: "not set: an unsigned request lets anyone who reaches the endpoint point the domain elsewhere",
			Accepted: "the token the webhook checks the signature with"}
	}
	env, err := w.Seal(ctx, p)
	if err != nil {
		return err
	}
	body, err := json.Marshal(env)
	if err != nil {
		return err
	}
	log := w.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	attempts, timeout := w.Attempts, w.Timeout
	if attempts <= 0 {
		attempts = 5
	}
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	delay := time.Second
	var last error
	for i := 1; i <= attempts; i++ {
		if last = w.post(ctx, body, timeout); last == nil {
			log.Info("DNS webhook accepted the records", "url", redact(w.URL), "attempt", i)
			return nil
		}
		log.Warn("DNS webhook attempt failed", "url", redact(w.URL), "attempt", i, "of", attempts, "err", last)
		if i < attempts && !wait.Sleep(ctx, delay) {
			return ctx.Err()
		}
		delay *= 2
	}
	return fmt.Errorf("DNS webhook %s: %d attempts failed; last: %w", redact(w.URL), attempts, last)
}

func (w *Webhook) post(ctx context.Context, body []byte, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "tee-ingress/dnssetup")
	c := w.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		return nil
	}
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	return fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(snippet)))
}

// redact drops userinfo and query from a URL for logs: either may hold a
// credential.
func redact(u string) string {
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		u = u[:i]
	}
	if s := strings.Index(u, "://"); s >= 0 {
		if at := strings.LastIndexByte(u[s+3:], '@'); at >= 0 && !strings.Contains(u[s+3:s+3+at], "/") {
			u = u[:s+3] + u[s+4+at:]
		}
	}
	return u
}
