package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/internal/dnsname"
)

// Bounds on what the CT API may send and how much verifycli asks of it.
const (
	maxCTBody      = 64 << 20 // a search answer
	maxCTEntries   = 100000
	maxCTDownloads = 100 // certificates downloaded per run to compare public keys
)

// ctEntry is one row of a crt.sh JSON search answer. crt.sh lists a
// precertificate and its certificate as two rows with the same serial.
type ctEntry struct {
	IssuerCAID     int64  `json:"issuer_ca_id"`
	IssuerName     string `json:"issuer_name"`
	CommonName     string `json:"common_name"`
	NameValue      string `json:"name_value"` // the SANs, newline-separated
	ID             int64  `json:"id"`
	EntryTimestamp string `json:"entry_timestamp"`
	NotBefore      string `json:"not_before"`
	NotAfter       string `json:"not_after"`
	SerialNumber   string `json:"serial_number"` // lowercase hex

	notBefore, notAfter time.Time
}

// names are the DNS names the entry lists, lowercase.
func (e ctEntry) names() []string {
	var out []string
	for _, n := range append(strings.Split(e.NameValue, "\n"), e.CommonName) {
		if n = strings.ToLower(strings.TrimSpace(n)); n != "" && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// describe is how a finding names the entry.
func (e ctEntry) describe() string {
	return fmt.Sprintf("crt.sh id %d: %s, serial %s, valid %s to %s, issuer %s", e.ID, strings.Join(e.names(), " "),
		e.SerialNumber, e.notBefore.Format(time.RFC3339), e.notAfter.Format(time.RFC3339), e.IssuerName)
}

// ctTimeLayouts are the forms crt.sh and compatible APIs give times in;
// times without a zone are UTC.
var ctTimeLayouts = []string{"2006-01-02T15:04:05.999999999", time.RFC3339Nano, "2006-01-02 15:04:05.999999999"}

func parseCTTime(s string) (time.Time, error) {
	for _, l := range ctTimeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("time %q is not in the form 2006-01-02T15:04:05", s)
}

// parseCTEntries decodes a crt.sh JSON search answer: an array of entries,
// each with an id, a serial and parseable validity times.
func parseCTEntries(b []byte) ([]ctEntry, error) {
	var es []ctEntry
	if err := json.Unmarshal(b, &es); err != nil {
		return nil, fmt.Errorf("decoding the CT answer as a JSON array of certificates: %w", err)
	}
	if len(es) > maxCTEntries {
		return nil, fmt.Errorf("the CT answer lists %d certificates, at most %d accepted", len(es), maxCTEntries)
	}
	for i := range es {
		e := &es[i]
		var err error
		if e.notBefore, err = parseCTTime(e.NotBefore); err != nil {
			return nil, fmt.Errorf("CT entry %d (id %d): not_before: %w", i, e.ID, err)
		}
		if e.notAfter, err = parseCTTime(e.NotAfter); err != nil {
			return nil, fmt.Errorf("CT entry %d (id %d): not_after: %w", i, e.ID, err)
		}
		if _, err := hex.DecodeString(evenHex(e.SerialNumber)); err != nil || e.SerialNumber == "" {
			return nil, fmt.Errorf("CT entry %d (id %d): serial_number %q is not hex", i, e.ID, truncate(e.SerialNumber))
		}
		e.SerialNumber = strings.ToLower(e.SerialNumber)
	}
	return es, nil
}

// normSerial puts a hex serial in the form history.json uses: lowercase,
// no leading zero bytes (crt.sh keeps the DER sign byte).
func normSerial(s string) string {
	s = strings.TrimLeft(strings.ToLower(s), "0")
	if s == "" {
		return "0"
	}
	return s
}

func evenHex(s string) string {
	if len(s)%2 == 1 {
		return "0" + s
	}
	return s
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// ctClient talks to a crt.sh-compatible API: GET base?q=<name>&output=json
// lists certificates, GET base?d=<id> downloads one.
type ctClient struct {
	base    *url.URL
	http    *http.Client
	timeout time.Duration
}

func newCTClient(o *options) (*ctClient, error) {
	u, err := url.Parse(o.ctURL)
	if err != nil {
		return nil, fmt.Errorf("--ct-url: %w", err)
	}
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	for _, r := range o.extraRoots {
		roots.AddCert(r)
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		ResponseHeaderTimeout: o.timeout,
	}
	return &ctClient{base: u, http: &http.Client{Transport: tr, Timeout: o.timeout}, timeout: o.timeout}, nil
}

func (c *ctClient) close() { c.http.CloseIdleConnections() }

func (c *ctClient) get(ctx context.Context, params url.Values, limit int64) ([]byte, error) {
	u := *c.base
	q := u.Query()
	for k, v := range params {
		q[k] = v
	}
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("querying %s: %w", u.String(), err)
	}
	req.Header.Set("User-Agent", "verifycli (tee-ingress)")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("querying the CT API: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", u.String(), err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP status %d: %s", u.String(), resp.StatusCode, firstLine(b))
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: answer over %d bytes", u.String(), limit)
	}
	return b, nil
}

// search lists the certificates the API knows for name.
func (c *ctClient) search(ctx context.Context, name string) ([]ctEntry, error) {
	b, err := c.get(ctx, url.Values{"q": {name}, "output": {"json"}}, maxCTBody)
	if err != nil {
		return nil, err
	}
	return parseCTEntries(b)
}

// download fetches the certificate (or precertificate) of an entry, in PEM
// or DER.
func (c *ctClient) download(ctx context.Context, id int64) (*x509.Certificate, error) {
	b, err := c.get(ctx, url.Values{"d": {strconv.FormatInt(id, 10)}}, 1<<20)
	if err != nil {
		return nil, err
	}
	der := b
	if blk, _ := pem.Decode(bytes.TrimSpace(b)); blk != nil {
		der = blk.Bytes
	}
	// A precertificate carries the critical poison extension, which
	// ParseCertificate accepts; its public key is the certificate's.
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("crt.sh id %d: %w", id, err)
	}
	return cert, nil
}

// searchAll searches every name and merges the answers, one entry per id.
func (c *ctClient) searchAll(ctx context.Context, names []string) ([]ctEntry, error) {
	seen := map[int64]bool{}
	var out []ctEntry
	for _, n := range names {
		es, err := c.search(ctx, n)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			if !seen[e.ID] {
				seen[e.ID] = true
				out = append(out, e)
			}
		}
	}
	return out, nil
}

// coversName reports whether a certificate name is valid for name: equal,
// or a one-label wildcard matching a non-wildcard name.
func coversName(certName, name string) bool { return dnsname.Covers(certName, name) }

// ctQueryNames: the name, and for a name below a registrable domain the
// wildcard that would cover it too.
func ctQueryNames(name string) []string {
	names := []string{name}
	if strings.HasPrefix(name, "*.") {
		return names
	}
	if i := strings.IndexByte(name, '.'); i > 0 && strings.Contains(name[i+1:], ".") {
		names = append(names, "*"+name[i:])
	}
	return names
}

// ctSetup runs the search part shared by both CT checks: the ct.query
// check and the unexpired entries valid for one of names.
func ctSetup(ctx context.Context, o *options, names []string) (*ctClient, checkT, []ctEntry, bool) {
	q := checkT{Name: checkCTQuery}
	if o.ctURL == "" {
		q.Status, q.Detail = skip, "--ct-url off"
		return nil, q, nil, false
	}
	c, err := newCTClient(o)
	if err != nil {
		q.Status, q.Detail = warn, err.Error()
		return nil, q, nil, false
	}
	entries, err := c.searchAll(ctx, names)
	if err != nil {
		c.close()
		q.Status, q.Detail = warn, fmt.Sprintf("searching %s for %s: %v", o.ctURL, strings.Join(names, ", "), err)
		q.Hint = "the CT check could not run; retry later (crt.sh is often overloaded) or use another --ct-url"
		return nil, q, nil, false
	}
	var live []ctEntry
	expired, other := 0, 0
	for _, e := range entries {
		if !e.notAfter.After(o.now) {
			expired++
			continue
		}
		covers := false
		for _, n := range e.names() {
			for _, want := range names {
				covers = covers || coversName(n, want)
			}
		}
		if !covers {
			other++
			continue
		}
		live = append(live, e)
	}
	q.Status = pass
	q.Got = fmt.Sprintf("%d entries: %d unexpired for %s, %d expired, %d for other names", len(entries), len(live), strings.Join(names, " or "), expired, other)
	q.Detail = "searched " + o.ctURL + " for " + strings.Join(names, ", ")
	return c, q, live, true
}

// ctDomainChecks: every unexpired certificate valid for domain in the CT
// API is in history.json. A row matches by serial number, and the match is
// confirmed by downloading the certificate and comparing the SHA-256 of its
// public key with the history entry's (a rogue CA can copy a serial, not a
// private key).
func ctDomainChecks(ctx context.Context, o *options, domain string, pb *evidence.ParsedBundle) []checkT {
	c := checkT{Name: checkCTCertificates, Want: "every unexpired certificate for " + domain + " listed in history.json"}
	client, q, live, ok := ctSetup(ctx, o, ctQueryNames(domain))
	if !ok {
		c.Status, c.Detail = skip, "no CT answer (see ct.query)"
		return []checkT{q, c}
	}
	defer client.close()
	if pb.HistoryErr != nil {
		var all []string
		for _, e := range live {
			all = append(all, e.describe())
		}
		c.Status, c.Detail = warn, "history.json unusable, so CT certificates cannot be matched: "+pb.HistoryErr.Error()
		if len(all) > 0 {
			c.Detail += "; unexpired in CT: " + strings.Join(all, "; ")
		}
		if !errors.Is(pb.HistoryErr, fs.ErrNotExist) && len(live) > 0 {
			c.Status = fail
			c.Hint = "history.json is malformed, so none of these certificates is accounted for"
		}
		return []checkT{q, c}
	}
	bySerial := map[string][]evidence.HistoryEntry{}
	for _, h := range pb.History {
		bySerial[normSerial(h.Serial)] = append(bySerial[normSerial(h.Serial)], h)
	}
	var unknown, unconfirmed []string
	confirmed, downloads := 0, 0
	for _, e := range live {
		hs := bySerial[normSerial(e.SerialNumber)]
		if len(hs) == 0 {
			unknown = append(unknown, e.describe())
			continue
		}
		if downloads == maxCTDownloads {
			unconfirmed = append(unconfirmed, e.describe()+" (download limit reached)")
			continue
		}
		downloads++
		cert, err := client.download(ctx, e.ID)
		if err != nil {
			unconfirmed = append(unconfirmed, e.describe()+" (download failed: "+err.Error()+")")
			continue
		}
		spki := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
		match := false
		for _, h := range hs {
			match = match || h.SPKISHA256 == hex.EncodeToString(spki[:])
		}
		if !match {
			unknown = append(unknown, e.describe()+" (same serial as a history certificate, but another public key)")
			continue
		}
		confirmed++
	}
	c.Got = fmt.Sprintf("%d unexpired, %d matched and confirmed, %d unknown, %d unconfirmed", len(live), confirmed, len(unknown), len(unconfirmed))
	switch {
	case len(unknown) > 0:
		c.Status = fail
		c.Detail = "certificates for " + domain + " that this deployment did not obtain: " + strings.Join(unknown, "; ")
		c.Hint = "someone else holds a valid certificate for this domain and can impersonate it: find out how it was issued (CAA, DNS access), have it revoked"
	case len(unconfirmed) > 0:
		c.Status = warn
		c.Detail = "serials match history.json, but the public keys could not be compared: " + strings.Join(unconfirmed, "; ")
		c.Hint = "retry later to compare the keys"
	case len(live) == 0:
		c.Status, c.Detail = warn, "the CT API lists no unexpired certificate for "+domain
		c.Hint = "every publicly trusted certificate is logged: the log search may lag, or the served certificate is not publicly trusted (a development CA)"
	default:
		c.Status, c.Detail = pass, "every unexpired certificate for "+domain+" in CT is in history.json, with the same public key"
	}
	return []checkT{q, c}
}

// ctKeyChecks: every unexpired certificate for names in the CT API has one
// of the quoted public keys (the gateway's check).
func ctKeyChecks(ctx context.Context, o *options, names []string, keys map[[32]byte]bool) []checkT {
	c := checkT{Name: checkCTCertificates, Want: "every unexpired certificate for " + strings.Join(names, " or ") + " has a quoted public key"}
	client, q, live, ok := ctSetup(ctx, o, names)
	if !ok {
		c.Status, c.Detail = skip, "no CT answer (see ct.query)"
		return []checkT{q, c}
	}
	defer client.close()
	var unknown, unchecked []string
	known := 0
	for i, e := range live {
		if i >= maxCTDownloads {
			unchecked = append(unchecked, fmt.Sprintf("%d more (download limit reached)", len(live)-i))
			break
		}
		cert, err := client.download(ctx, e.ID)
		if err != nil {
			unchecked = append(unchecked, e.describe()+" (download failed: "+err.Error()+")")
			continue
		}
		if keys[sha256.Sum256(cert.RawSubjectPublicKeyInfo)] {
			known++
			continue
		}
		unknown = append(unknown, e.describe())
	}
	c.Got = fmt.Sprintf("%d unexpired, %d with a quoted key, %d unknown, %d unchecked", len(live), known, len(unknown), len(unchecked))
	switch {
	case len(unknown) > 0:
		c.Status = fail
		c.Detail = "certificates whose key no verified quote vouches for: " + strings.Join(unknown, "; ")
		c.Hint = "someone other than the gateway's TEE holds a valid certificate for these names"
	case len(unchecked) > 0:
		c.Status, c.Detail = warn, "not every certificate could be compared: "+strings.Join(unchecked, "; ")
		c.Hint = "retry later"
	case len(live) == 0:
		c.Status, c.Detail = warn, "the CT API lists no unexpired certificate for "+strings.Join(names, ", ")
		c.Hint = "every publicly trusted certificate is logged: the log search may lag, or the served certificate is not publicly trusted"
	default:
		c.Status, c.Detail = pass, "every unexpired certificate in CT has a quoted public key"
	}
	return []checkT{q, c}
}
