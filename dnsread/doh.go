package dnsread

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// dohMessageType is RFC 8484's media type for DNS wire messages.
const dohMessageType = "application/dns-message"

// maxDoHAnswer bounds a DNS-over-HTTPS answer: a DNS message is at most
// 64 KiB.
const maxDoHAnswer = 65535

var defaultDoHClient = &http.Client{Timeout: 30 * time.Second}

func (r *Resolver) httpClient() *http.Client {
	if r != nil && r.HTTPClient != nil {
		return r.HTTPClient
	}
	return defaultDoHClient
}

// queryDoH sends one query as an RFC 8484 POST, id 0 as the RFC
// recommends (the TLS connection, not the id, ties answer to question).
func queryDoH(ctx context.Context, c *http.Client, url, name string, qtype uint16, timeout time.Duration) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.SetQuestion(FQDN(name), qtype)
	q.Id = 0
	q.RecursionDesired = true
	wire, err := q.Pack()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", dns.TypeToString[qtype], FQDN(name), err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(wire))
	if err != nil {
		return nil, fmt.Errorf("DNS-over-HTTPS resolver %q: %w", url, err)
	}
	req.Header.Set("Content-Type", dohMessageType)
	req.Header.Set("Accept", dohMessageType)
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s to %s: %w", dns.TypeToString[qtype], FQDN(name), url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDoHAnswer+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s %s to %s: reading the answer: %w", dns.TypeToString[qtype], FQDN(name), url, err)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%s %s to %s: HTTP %d", dns.TypeToString[qtype], FQDN(name), url, resp.StatusCode)
	case !strings.HasPrefix(resp.Header.Get("Content-Type"), dohMessageType):
		return nil, fmt.Errorf("%s %s to %s: the answer is %q, not %s: is it an RFC 8484 endpoint (…/dns-query)?", dns.TypeToString[qtype], FQDN(name), url, resp.Header.Get("Content-Type"), dohMessageType)
	case len(body) > maxDoHAnswer:
		return nil, fmt.Errorf("%s %s to %s: answer over 64 KiB", dns.TypeToString[qtype], FQDN(name), url)
	}
	in := new(dns.Msg)
	if err := in.Unpack(body); err != nil {
		return nil, fmt.Errorf("%s %s to %s: not a DNS message (%v); is it an RFC 8484 endpoint (…/dns-query)?", dns.TypeToString[qtype], FQDN(name), url, err)
	}
	if len(in.Question) != 1 || in.Question[0].Qtype != qtype || !dns.IsFqdn(in.Question[0].Name) || !equalFold(in.Question[0].Name, FQDN(name)) {
		return nil, fmt.Errorf("%s %s to %s: the answer is for another question", dns.TypeToString[qtype], FQDN(name), url)
	}
	return in, nil
}

func equalFold(a, b string) bool { return bytes.EqualFold([]byte(a), []byte(b)) }
