package evidence

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// The DNS webhook (DNS_SETUP_MODE=webhook) asks an operator's endpoint to
// create DNS records, in dstack-ingress 2.3's envelope: the payload as a
// string (so that sender and receiver hash the same bytes), an HMAC-SHA256
// over it keyed by a shared token, and a TDX quote whose report_data is
// SHA-256(payload). The HMAC proves the sender knows the token; the quote
// proves it is the expected app in a TEE. A receiver checks both, and the
// identity in the quote, before touching DNS.

// WebhookRecord is one record to create.
type WebhookRecord struct {
	Type  string `json:"type"`  // CNAME, TXT or CAA
	Name  string `json:"name"`  // without the final dot
	Value string `json:"value"` // CAA: `0 issue "..."`
	Note  string `json:"note,omitempty"`
	// Exact: a CNAME that must be exactly this one. Otherwise a CNAME to
	// the gateway may also be flattened to the gateway's addresses.
	Exact bool `json:"exact"`
}

func (r WebhookRecord) String() string { return r.Name + " " + r.Type + " " + r.Value }

// WebhookPayload is what the endpoint is asked to do.
type WebhookPayload struct {
	Version    int             `json:"version"`
	Domain     string          `json:"domain"`
	Challenge  string          `json:"challenge"`
	AppID      string          `json:"app_id"`
	InstanceID string          `json:"instance_id"`
	Timestamp  int64           `json:"timestamp"`
	Records    []WebhookRecord `json:"records"`
}

// WebhookEnvelope is the request body.
type WebhookEnvelope struct {
	Payload    string `json:"payload"`
	HMACSHA256 string `json:"hmac_sha256,omitempty"`
	// Attestation is the guest agent's GetQuote answer with report_data
	// set to the hex SHA-256 of Payload.
	Attestation json.RawMessage `json:"attestation,omitempty"`
}

// SignWebhook is the envelope's hmac_sha256.
func SignWebhook(payload, token string) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte(payload))
	return hex.EncodeToString(m.Sum(nil))
}

// Checks of VerifyWebhook, besides VerifyQuote's.
const (
	CheckWebhookJSON    = "webhook.json"        // the envelope and its payload parse
	CheckWebhookHMAC    = "webhook.hmac"        // hmac_sha256 is the payload's under the token
	CheckWebhookFresh   = "webhook.timestamp"   // the payload is recent
	CheckWebhookBinding = "webhook.report_data" // the quote's report_data is SHA-256(payload)
)

// WebhookOptions say what a receiver expects.
type WebhookOptions struct {
	// Token is the shared secret. Empty: the HMAC is not checked (fail).
	Token string
	// MaxAge bounds the payload's age. Zero: 10 minutes.
	MaxAge time.Duration
	// Quote is what the quote must satisfy; its ReportData is set here.
	// Quote.AppID empty: the payload's app_id is required of the quote.
	Quote VerifyOptions
}

// VerifyWebhook checks an envelope as a receiver must before writing DNS:
// the HMAC, the payload's age, the quote (signature, identity) and that
// the quote's report_data is SHA-256 of exactly the payload string.
func VerifyWebhook(body []byte, opts WebhookOptions) (*WebhookPayload, []Check) {
	var env WebhookEnvelope
	var p WebhookPayload
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, []Check{{Name: CheckWebhookJSON, Status: Fail, Detail: "the envelope is not JSON: " + err.Error()}}
	}
	if err := json.Unmarshal([]byte(env.Payload), &p); err != nil || p.Version != 1 {
		return nil, []Check{{Name: CheckWebhookJSON, Status: Fail, Detail: fmt.Sprintf("the payload is not a version 1 payload (%v)", err)}}
	}
	checks := []Check{{Name: CheckWebhookJSON, Status: Pass, Detail: fmt.Sprintf("%d records for %s", len(p.Records), p.Domain)}}
	checks = append(checks, hmacCheck(env, opts.Token), freshCheck(p, opts.MaxAge, opts.Quote.Now))
	sum := sha256.Sum256([]byte(env.Payload))
	if len(env.Attestation) == 0 {
		return &p, append(checks, Check{Name: CheckWebhookBinding, Status: Fail, Detail: "no attestation: nothing proves the sender runs in a TEE"})
	}
	var att map[string]json.RawMessage
	var rd string
	if err := json.Unmarshal(env.Attestation, &att); err != nil {
		return &p, append(checks, Check{Name: CheckWebhookBinding, Status: Fail, Detail: "the attestation is not a JSON object"})
	}
	json.Unmarshal(att["report_data"], &rd)
	delete(att, "report_data") // dstack-ingress's 32-byte form, not the agent's
	quoteJSON, _ := json.Marshal(att)
	opts.Quote.ReportData = make([]byte, 64)
	copy(opts.Quote.ReportData, sum[:])
	if opts.Quote.AppID == "" {
		opts.Quote.AppID = p.AppID
	}
	bind := Check{Name: CheckWebhookBinding, Status: Pass, Want: hex.EncodeToString(sum[:]), Got: rd}
	if rd != hex.EncodeToString(sum[:]) {
		bind.Status, bind.Detail = Fail, "the attestation's report_data is not SHA-256 of the payload"
	}
	return &p, append(append(checks, bind), VerifyQuote(quoteJSON, opts.Quote)...)
}

func hmacCheck(env WebhookEnvelope, token string) Check {
	c := Check{Name: CheckWebhookHMAC, Status: Pass}
	switch {
	case token == "":
		c.Status, c.Detail = Fail, "no token given to check the HMAC with"
	case env.HMACSHA256 == "":
		c.Status, c.Detail = Fail, "the envelope is not signed (hmac_sha256 missing)"
	case !hmac.Equal([]byte(env.HMACSHA256), []byte(SignWebhook(env.Payload, token))):
		c.Status, c.Detail = Fail, "hmac_sha256 does not match: another token, or the payload was changed"
	}
	return c
}

func freshCheck(p WebhookPayload, maxAge time.Duration, now time.Time) Check {
	if maxAge <= 0 {
		maxAge = 10 * time.Minute
	}
	if now.IsZero() {
		now = time.Now()
	}
	at := time.Unix(p.Timestamp, 0)
	c := Check{Name: CheckWebhookFresh, Status: Pass, Got: at.UTC().Format(time.RFC3339)}
	if age := now.Sub(at); age > maxAge || age < -time.Minute {
		c.Status, c.Detail = Fail, fmt.Sprintf("sent %s ago, more than %s: a replay?", age.Round(time.Second), maxAge)
	}
	return c
}
