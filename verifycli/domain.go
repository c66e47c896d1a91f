package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/internal/wait"
)

// maxBundleAttempts bounds re-fetching when the server swaps in a new bundle
// between fetching the files and the live quote.
const maxBundleAttempts = 3

// runDomain verifies a custom domain served by tee-ingress.
func runDomain(ctx context.Context, o *options, arg string) (*result, error) {
	u, err := parseTargetURL(arg, "domain")
	if err != nil {
		return nil, err
	}
	domain := strings.ToLower(u.Hostname())
	if net.ParseIP(domain) != nil || evidence.ValidateDomain(domain) != nil || strings.HasPrefix(domain, "*.") {
		return nil, usageErr("give the domain name the deployment serves, such as https://app.example.com; for an IP address use verifycli tls",
			"domain: %q is not a domain name", u.Hostname())
	}
	t := newTarget(u, o.connect, o.timeout)
	defer t.close()
	if err := t.connect(ctx); err != nil {
		return nil, err
	}

	var nonce [32]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("generating a nonce: %w", err)
	}
	files, live, changed, err := fetchConsistent(ctx, t, nonce)
	if changed != nil || err != nil {
		return changed, err
	}
	pb, err := evidence.ParseBundle(files)
	if err != nil {
		return nil, &cliError{err: fmt.Errorf("%s: %w", t.url(evidence.Prefix+"/"), err), hint: "the server publishes no evidence bundle here"}
	}

	vo := o.verifyOptions()
	cs := []checkT{t.tlsConnectCheck(), chainCheck(t.chain(), domain, o)}
	cs = append(cs, evidence.VerifyBundle(pb, vo)...)
	leafCheck, certFile := leafInBundleCheck(pb, domain, t.leaf())
	cs = append(cs, leafCheck)
	cs = append(cs, liveChecks(live, nonce, files, vo, cs)...)

	cs = append(cs, domainCAAChecks(ctx, o, domain, certFile, pb.AccountURI())...)
	cs = append(cs, ctDomainChecks(ctx, o, domain, pb)...)

	res := &result{checks: cs, identity: identityOf("", cs), certificate: certificateReport(t.leaf()), accountURI: pb.AccountURI(), layout: pb.Layout()}
	if live.body != nil {
		res.nonce = hex.EncodeToString(nonce[:])
	}
	return res, nil
}

// fetchConsistent fetches the bundle and a live quote over nonce, again if
// the quote vouches for another bundle than the one fetched (at most
// maxBundleAttempts times). changed is the result to report when the
// server's certificate changed mid-way.
func fetchConsistent(ctx context.Context, t *target, nonce [32]byte) (files map[string][]byte, live liveQuote, changed *result, err error) {
	var sumsID string
	for attempt := 1; ; attempt++ {
		files, err = evidence.FetchBundle(ctx, t.client, t.url(evidence.Prefix+"/"), nil)
		if errors.Is(err, errPinChanged) {
			return nil, live, pinChanged(t, err), nil
		}
		if err != nil {
			return nil, live, nil, fetchError(err, t)
		}
		sumsID = ""
		if s, ok := files[evidence.SHA256SumFile]; ok {
			h := sha256.Sum256(s)
			sumsID = hex.EncodeToString(h[:])
		}
		if live, err = fetchLiveQuote(ctx, t, nonce); errors.Is(err, errPinChanged) {
			return nil, live, pinChanged(t, err), nil
		} else if err != nil {
			return nil, live, nil, err
		}
		// A live quote vouches for the bundle in force when it was made; if
		// that is not the one fetched, fetch again.
		if live.bundleID == "" || sumsID == "" || live.bundleID == sumsID || attempt == maxBundleAttempts {
			return files, live, nil, nil
		}
	}
}

// domainCAAChecks check CAA at the name; when the bundle serves it under a
// wildcard certificate (certFile), the wildcard's set is what the deployment
// pins, and the name's own set is reported as a warning only.
func domainCAAChecks(ctx context.Context, o *options, domain, certFile, account string) []checkT {
	var cs []checkT
	if wild, ok := strings.CutPrefix(strings.TrimSuffix(strings.TrimPrefix(certFile, "cert-"), ".pem"), "*."); ok && certFile != evidence.CertFile {
		cs = append(cs, caaCheck(ctx, o, checkCAA, "*."+wild, account))
		own := caaCheck(ctx, o, checkCAA+":"+domain, domain, account)
		if own.Status == fail {
			own.Status = warn
			own.Hint = "the deployment pins issuewild for *." + wild + ", but a certificate for " + domain + " alone is not pinned; the CT check shows any that exist"
		}
		cs = append(cs, own)
	} else {
		cs = append(cs, caaCheck(ctx, o, checkCAA, domain, account))
	}
	return cs
}

// fetchError explains a failed bundle download.
func fetchError(err error, t *target) error {
	var ce *cliError
	switch {
	case errors.As(err, &ce):
		return err
	case errors.Is(err, evidence.ErrBundleChanged):
		return &cliError{err: err, hint: "the deployment published new evidence while it was being fetched; retry in a moment"}
	case strings.Contains(err.Error(), "HTTP status 404"):
		return &cliError{err: err, hint: "the server does not publish /evidences/ here; is this a tee-ingress deployment with EVIDENCE_SERVER=true?"}
	case strings.Contains(err.Error(), "HTTP status"):
		return &cliError{err: err, hint: "the server failed to serve its evidence; retry later, or look at the deployment's logs"}
	}
	return netError(err, "fetching the evidence bundle", t)
}

// liveQuote is the answer to quote.json?nonce=...
type liveQuote struct {
	status   int
	body     []byte // nil unless status is 200
	bundleID string // evidence.BundleHeader of the answer
	reason   string // why there is no body
}

func fetchLiveQuote(ctx context.Context, t *target, nonce [32]byte) (liveQuote, error) {
	for attempt := 0; ; attempt++ {
		b, status, h, err := t.get(ctx, evidence.Prefix+"/"+evidence.QuoteFile+"?nonce="+hex.EncodeToString(nonce[:]), "")
		if err != nil {
			return liveQuote{}, err
		}
		lq := liveQuote{status: status, bundleID: h.Get(evidence.BundleHeader)}
		switch {
		case status == http.StatusOK:
			lq.body = b
		case status == http.StatusTooManyRequests:
			lq.reason = fmt.Sprintf("the server is rate-limiting live quotes (HTTP 429, %d attempts)", attempt+1)
			if attempt < liveQuoteRetries && waitRetry(ctx, h.Get("Retry-After"), attempt) {
				continue
			}
		default:
			lq.reason = fmt.Sprintf("the server offers no live quote (HTTP %d: %s)", status, firstLine(b))
		}
		return lq, nil
	}
}

// A live quote refused with 429 is asked for again this many times, after
// the server's Retry-After (else 1, 2, 4 s), at most maxRetryWait each.
const (
	liveQuoteRetries = 3
	maxRetryWait     = 10 * time.Second
)

// waitRetry waits before the next attempt; false if ctx ends first.
func waitRetry(ctx context.Context, retryAfter string, attempt int) bool {
	d := time.Second << attempt
	if n, err := strconv.Atoi(strings.TrimSpace(retryAfter)); err == nil && n >= 0 {
		d = time.Duration(n) * time.Second
	}
	return wait.Sleep(ctx, min(d, maxRetryWait))
}

// liveChecks verifies the live quote against the fetched bundle and the
// published quote's identity.
func liveChecks(lq liveQuote, nonce [32]byte, files map[string][]byte, vo evidence.VerifyOptions, published []checkT) []checkT {
	c := checkT{Name: checkLiveQuote, Want: "a quote over SHA-256(sha256sum.txt) || nonce " + hex.EncodeToString(nonce[:])}
	sums, ok := files[evidence.SHA256SumFile]
	switch {
	case !ok:
		c.Status, c.Detail = skip, "no sha256sum.txt to bind a live quote to"
		return []checkT{c}
	case lq.body == nil:
		c.Status, c.Detail = warn, lq.reason+"; the published quote is checked, but not that the TEE vouches for this bundle now: freshness not proven"
		c.Hint = "tee-ingress answers quote.json?nonce=<64 hex>; an older or rate-limited server may not"
		return []checkT{c}
	}
	c.Status, c.Got, c.Detail = pass, fmt.Sprintf("HTTP 200, %d bytes", len(lq.body)), "the server answered a live quote for a fresh nonce"
	rd := evidence.BundleReportData(sha256.Sum256(sums), nonce)
	lvo := vo
	lvo.ReportData = rd[:]
	cs := append([]checkT{c}, prefixed(prefixLive, evidence.VerifyQuote(lq.body, lvo))...)
	cs = append(cs, sameIdentityCheck(published, cs))
	return cs
}

// sameIdentityCheck: the live quote comes from the same app, version and
// instance as the published one.
func sameIdentityCheck(published, live []checkT) checkT {
	c := checkT{Name: prefixLive + "identity"}
	p, l := identityOf("", published), identityOf(prefixLive, live)
	if p == nil || l == nil {
		c.Status, c.Detail = skip, "one of the quotes is not trusted (see above); identities not compared"
		return c
	}
	c.Want = fmt.Sprintf("app-id %s compose-hash %s instance-id %s", p.AppID, p.ComposeHash, p.InstanceID)
	c.Got = fmt.Sprintf("app-id %s compose-hash %s instance-id %s", l.AppID, l.ComposeHash, l.InstanceID)
	switch {
	case p.AppID != l.AppID || p.ComposeHash != l.ComposeHash:
		c.Status, c.Detail = fail, "the live quote comes from another app or compose version than the published quote"
		c.Hint = "the evidence was copied from another deployment, or the app changed without republishing"
	case p.InstanceID != l.InstanceID:
		c.Status, c.Detail = warn, "the live quote comes from another instance of the app than the published quote"
		c.Hint = "several instances share this certificate and bundle; expected only if you run them so"
	default:
		c.Status, c.Detail = pass, "the live and published quotes measure the same app, compose-hash and instance"
	}
	return c
}

// leafInBundleCheck compares the served leaf with the bundle's certificate
// for domain: cert-<domain>.pem, else the one-label wildcard's, else
// cert.pem. It returns the file it used.
func leafInBundleCheck(pb *evidence.ParsedBundle, domain string, served *x509.Certificate) (checkT, string) {
	c := checkT{Name: checkTLSLeafBundle}
	sfp := sha256.Sum256(served.Raw)
	c.Got = "sha256 " + hex.EncodeToString(sfp[:])
	candidates := []string{evidence.CertFileName(domain)}
	if i := strings.IndexByte(domain, '.'); i > 0 && strings.Contains(domain[i+1:], ".") {
		candidates = append(candidates, evidence.CertFileName("*"+domain[i:]))
	}
	candidates = append(candidates, evidence.CertFile)
	for _, name := range candidates {
		if _, present := pb.Files[name]; !present {
			continue
		}
		leaf := pb.Leaf(name)
		if leaf == nil {
			c.Status, c.Detail = fail, name+" does not hold a valid chain (see its check above)"
			c.Hint = "the bundle's certificate for this domain cannot be compared"
			return c, name
		}
		fp := sha256.Sum256(leaf.Raw)
		c.Want = "sha256 " + hex.EncodeToString(fp[:])
		if !bytes.Equal(leaf.Raw, served.Raw) {
			c.Status, c.Detail = fail, "the served certificate is not the one in "+name
			c.Hint = "someone other than the TEE serves this domain (a man in the middle, or a certificate the TEE did not obtain), or the bundle is stale"
			return c, name
		}
		c.Status, c.Detail = pass, "the served certificate is the one in "+name
		return c, name
	}
	c.Status, c.Detail = fail, fmt.Sprintf("the bundle holds none of %s", strings.Join(candidates, ", "))
	c.Hint = "the deployment does not publish a certificate for this domain"
	return c, ""
}

// chainCheck verifies the served chain for name under the system roots and
// --ca-file.
func chainCheck(chain []*x509.Certificate, name string, o *options) checkT {
	c := checkT{Name: checkTLSChain, Want: "a chain valid for " + name}
	roots, err := x509.SystemCertPool()
	where := "the system roots"
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
		where = "no system roots (unavailable)"
	}
	for _, r := range o.extraRoots {
		roots.AddCert(r)
	}
	if len(o.extraRoots) > 0 {
		where += fmt.Sprintf(" and %d from --ca-file", len(o.extraRoots))
	}
	inter := x509.NewCertPool()
	for _, ic := range chain[1:] {
		inter.AddCert(ic)
	}
	chains, err := chain[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter, CurrentTime: o.now})
	if err != nil {
		c.Status, c.Got, c.Detail = fail, err.Error(), "the served chain is not valid for "+name+" under "+where
		c.Hint = "browsers reject this certificate; for a development CA pass its root with --ca-file"
		return c
	}
	top := chains[0][len(chains[0])-1]
	c.Status, c.Got = pass, "valid to "+top.Subject.CommonName
	c.Detail = fmt.Sprintf("the served chain of %d is valid for %s under %s", len(chain), name, where)
	return c
}

// firstLine returns the first line of an HTTP error body, shortened.
func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 120 {
		s = s[:120] + "..."
	}
	if s == "" {
		return "empty body"
	}
	return s
}
