package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/verifycli/report"
)

// Paths a dstack gateway serves on its own domain.
const (
	acmeInfoPath = "/.dstack/acme-info"
	appInfoPath  = "/.dstack/app-info"
)

// Report-data domains of the gateway's quotes (dstack's QuoteContentType::Custom).
const (
	ztCertPrefix      = "zt-cert:"
	acmeAccountPrefix = "acme-account:"
)

// maxQuotedKeys bounds acme-info's key lists.
const maxQuotedKeys = 1000

// acmeInfo is /.dstack/acme-info. Newer gateways send account_uri,
// account_quote, account_attestation and quoted_hist_keys; older ones also
// hist_keys, active_cert and base_domain. Quote fields hold a GetQuote
// response as a JSON string.
type acmeInfo struct {
	AccountURI         string      `json:"account_uri"`
	AccountQuote       string      `json:"account_quote"`
	AccountAttestation string      `json:"account_attestation"`
	QuotedHistKeys     []quotedKey `json:"quoted_hist_keys"`
	HistKeys           []string    `json:"hist_keys"`
	ActiveCert         string      `json:"active_cert"`
	BaseDomain         string      `json:"base_domain"`

	older bool // has one of the older fields
}

type quotedKey struct {
	PublicKey   string `json:"public_key"` // hex SubjectPublicKeyInfo DER
	Quote       string `json:"quote"`
	Attestation string `json:"attestation"`

	spki []byte
}

// parseAcmeInfo decodes and checks the shape of acme-info: an https
// account URI, hex SPKI DER public keys that parse.
func parseAcmeInfo(b []byte) (*acmeInfo, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("acme-info is not a JSON object: %w", err)
	}
	var ai acmeInfo
	if err := json.Unmarshal(b, &ai); err != nil {
		return nil, fmt.Errorf("acme-info: %w", err)
	}
	_, h := raw["hist_keys"]
	_, a := raw["active_cert"]
	_, d := raw["base_domain"]
	ai.older = h || a || d
	u, err := url.Parse(ai.AccountURI)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("acme-info: account_uri %q is not an https URL", truncate(ai.AccountURI))
	}
	if len(ai.QuotedHistKeys) == 0 {
		return nil, errors.New("acme-info: quoted_hist_keys is empty; nothing vouches for any certificate key")
	}
	if len(ai.QuotedHistKeys) > maxQuotedKeys || len(ai.HistKeys) > maxQuotedKeys {
		return nil, fmt.Errorf("acme-info: more than %d keys", maxQuotedKeys)
	}
	for i := range ai.QuotedHistKeys {
		k := &ai.QuotedHistKeys[i]
		spki, err := decodeSPKI(k.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("acme-info: quoted_hist_keys[%d].public_key: %w", i, err)
		}
		k.spki = spki
	}
	for i, hk := range ai.HistKeys {
		if _, err := decodeSPKI(hk); err != nil {
			return nil, fmt.Errorf("acme-info: hist_keys[%d]: %w", i, err)
		}
	}
	return &ai, nil
}

func decodeSPKI(h string) ([]byte, error) {
	b, err := hex.DecodeString(strings.TrimPrefix(h, "0x"))
	if err != nil {
		return nil, errors.New("not hex")
	}
	if _, err := x509.ParsePKIXPublicKey(b); err != nil {
		return nil, fmt.Errorf("not a SubjectPublicKeyInfo: %w", err)
	}
	return b, nil
}

// gatewayReportData is SHA-512(prefix || content), the report_data of the
// gateway's quotes.
func gatewayReportData(prefix string, content []byte) []byte {
	h := sha512.New()
	h.Write([]byte(prefix))
	h.Write(content)
	return h.Sum(nil)
}

// runGateway verifies a dstack gateway's certificate evidence.
func runGateway(ctx context.Context, o *options, arg string) (*result, error) {
	u, err := parseTargetURL(arg, "gateway")
	if err != nil {
		return nil, err
	}
	host := strings.ToLower(u.Hostname())
	if net.ParseIP(host) != nil || evidence.ValidateDomain(host) != nil || strings.HasPrefix(host, "*.") {
		return nil, usageErr("give the gateway's domain, such as https://gateway.dstack-prod5.phala.network", "gateway: %q is not a domain name", u.Hostname())
	}
	t := newTarget(u, o.connect, o.timeout)
	defer t.close()
	if err := t.connect(ctx); err != nil {
		return nil, err
	}
	cs := []checkT{t.tlsConnectCheck(), chainCheck(t.chain(), host, o)}
	res := &result{certificate: certificateReport(t.leaf())}

	body, status, _, err := t.get(ctx, acmeInfoPath, "application/json")
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, &cliError{err: fmt.Errorf("fetching %s: HTTP status %d: %s", t.url(acmeInfoPath), status, firstLine(body)),
			hint: "dstack gateways serve /.dstack/acme-info on their own domain, https://gateway.<base domain>"}
	}
	ai, err := parseAcmeInfo(body)
	if err != nil {
		cs = append(cs, checkT{Name: checkAcmeInfo, Status: fail, Detail: err.Error(),
			Hint: "the gateway's certificate evidence is malformed; nothing it says can be checked"})
		res.checks = cs
		return res, nil
	}
	res.accountURI = ai.AccountURI
	base, ok := strings.CutPrefix(host, "gateway.")
	if !ok {
		base = strings.ToLower(ai.BaseDomain)
	}
	if base == "" || evidence.ValidateDomain(base) != nil {
		return nil, usageErr("give the gateway as https://gateway.<base domain>", "gateway: cannot tell the base domain from %q", host)
	}
	format := "newer format (account_uri, account_quote, quoted_hist_keys)"
	if ai.older {
		format = "older format (with hist_keys, active_cert, base_domain)"
	}
	aic := checkT{Name: checkAcmeInfo, Status: pass, Got: fmt.Sprintf("%d quoted keys, account %s", len(ai.QuotedHistKeys), ai.AccountURI),
		Detail: "acme-info parses: " + format + "; base domain " + base}
	if ai.BaseDomain != "" && !strings.EqualFold(ai.BaseDomain, base) {
		aic.Status, aic.Detail = warn, aic.Detail+fmt.Sprintf("; but its base_domain says %s", ai.BaseDomain)
		aic.Hint = "the gateway names another base domain than its own host"
	}
	cs = append(cs, aic)

	vo := o.verifyOptions()
	acct := accountChecks(ai, vo)
	cs = append(cs, acct...)
	res.identity = identityOf(prefixAccount, acct)
	kcs, verified := quotedKeyChecks(ai, t.leaf().RawSubjectPublicKeyInfo, vo, res.identity)
	cs = append(cs, kcs...)
	if ai.older {
		cs = append(cs, histKeysCheck(ai), activeCertCheck(ai, t.leaf()))
	}
	cs = append(cs, caaCheck(ctx, o, checkCAA, "*."+base, ai.AccountURI))
	cs = append(cs, ctKeyChecks(ctx, o, []string{"*." + base, base}, verified)...)
	ac, err := appInfoCheck(ctx, t, res.identity)
	if err != nil {
		return nil, err
	}
	cs = append(cs, ac)
	res.checks = cs
	return res, nil
}

// accountChecks verify the quote or attestation binding the ACME account
// (its first checks name the identity).
func accountChecks(ai *acmeInfo, vo evidence.VerifyOptions) []checkT {
	avo := vo
	avo.ReportData = gatewayReportData(acmeAccountPrefix, []byte(ai.AccountURI))
	var acct []checkT
	switch {
	case ai.AccountQuote != "":
		acct = evidence.VerifyQuote([]byte(ai.AccountQuote), avo)
	case ai.AccountAttestation != "":
		acct = evidence.VerifyDstackAttestation([]byte(ai.AccountAttestation), avo)
	default:
		acct = []checkT{{Name: evidence.CheckQuoteJSON, Status: fail, Detail: "acme-info has neither account_quote nor account_attestation",
			Hint: "nothing binds the ACME account to a TEE"}}
	}
	acct = prefixed(prefixAccount, acct)
	if ai.AccountQuote != "" && ai.AccountAttestation != "" {
		// Both: the attestation is verified too, on its own.
		acct = append(acct, prefixed(prefixAccount+"attestation.", evidence.VerifyDstackAttestation([]byte(ai.AccountAttestation), avo))...)
	}

	return acct
}

// quotedKeyChecks verify each quoted key's quote and that the served key is
// one of them; verified holds the SHA-256 of every key whose quote holds.
func quotedKeyChecks(ai *acmeInfo, served []byte, vo evidence.VerifyOptions, identity *report.Identity) (cs []checkT, verified map[[32]byte]bool) {
	verified = map[[32]byte]bool{}
	servedIdx, servedOK := -1, false
	for i, k := range ai.QuotedHistKeys {
		isServed := bytes.Equal(k.spki, served)
		kvo := vo
		kvo.ReportData = gatewayReportData(ztCertPrefix, k.spki)
		if !isServed {
			// Older keys may come from older gateway versions: only the
			// served key's quote is held to --compose-hash / --compose.
			kvo.ComposeHash, kvo.ComposeJSON = "", nil
		}
		kc := keyQuoteCheck(i+1, k, kvo, identity)
		cs = append(cs, kc)
		if k.Quote != "" && k.Attestation != "" {
			// Both: the attestation must hold too.
			att := k
			att.Quote = ""
			ac := keyQuoteCheck(i+1, att, kvo, identity)
			ac.Name = fmt.Sprintf("%s:%d", checkKeyAttestation, i+1)
			cs = append(cs, ac)
			kc.Status = worst([]checkT{kc, ac})
		}
		if kc.Status != fail {
			verified[sha256.Sum256(k.spki)] = true
		}
		if isServed {
			servedIdx, servedOK = i+1, kc.Status != fail
		}
	}
	sfp := sha256.Sum256(served)
	sc := checkT{Name: checkServedKey, Got: "spki sha256 " + hex.EncodeToString(sfp[:]), Want: fmt.Sprintf("one of the %d quoted keys", len(ai.QuotedHistKeys))}
	switch {
	case servedIdx < 0:
		sc.Status, sc.Detail = fail, "the served certificate's public key is not among the quoted keys"
		sc.Hint = "no TEE vouches for the key this server uses: a man in the middle, or a certificate obtained outside the gateway"
	case !servedOK:
		sc.Status, sc.Detail = fail, fmt.Sprintf("the served key is quoted key %d, but its quote does not verify", servedIdx)
		sc.Hint = "the quote vouching for the served key is invalid (see " + fmt.Sprintf("%s:%d", checkKeyQuote, servedIdx) + ")"
	default:
		sc.Status, sc.Detail = pass, fmt.Sprintf("the served key is quoted key %d, whose quote verifies", servedIdx)
	}
	cs = append(cs, sc)
	return cs, verified
}

// keyQuoteCheck summarises the verification of one quoted key's quote.
func keyQuoteCheck(n int, k quotedKey, vo evidence.VerifyOptions, account *report.Identity) checkT {
	fp := sha256.Sum256(k.spki)
	c := checkT{Name: fmt.Sprintf("%s:%d", checkKeyQuote, n), Want: "report_data SHA-512(\"zt-cert:\" || key), a valid quote"}
	var qcs []checkT
	switch {
	case k.Quote != "":
		qcs = evidence.VerifyQuote([]byte(k.Quote), vo)
	case k.Attestation != "":
		qcs = evidence.VerifyDstackAttestation([]byte(k.Attestation), vo)
	default:
		c.Status, c.Got, c.Detail = fail, "spki sha256 "+hex.EncodeToString(fp[:]), "the key has neither a quote nor an attestation"
		c.Hint = "nothing shows this key was generated in a TEE"
		return c
	}
	id := identityOf("", qcs)
	c.Got = "spki sha256 " + hex.EncodeToString(fp[:])
	if id != nil {
		c.Got += ", app-id " + id.AppID + ", compose-hash " + id.ComposeHash
	}
	c.Status = worst(qcs)
	switch c.Status {
	case fail:
		c.Detail = "the key's quote does not hold: " + failedOf(qcs)
		c.Hint = "this key is not shown to come from the gateway's TEE"
	case warn:
		c.Detail = "the key's quote verifies, with warnings: " + warnedOf(qcs)
	default:
		c.Status, c.Detail = pass, "the quote binds the key and verifies"
	}
	if c.Status != fail && id != nil && account != nil && id.AppID != account.AppID {
		c.Status, c.Detail = warn, c.Detail+"; but from another app-id than the account quote ("+account.AppID+")"
		c.Hint = "keys of the gateway should come from the gateway app"
	}
	return c
}

// warnedOf names the checks that warned.
func warnedOf(cs []checkT) string {
	var names []string
	for _, c := range cs {
		if c.Status == warn {
			names = append(names, c.Name+" ("+c.Detail+")")
		}
	}
	return strings.Join(names, ", ")
}

// histKeysCheck (older format): every hist_key also has a quote.
func histKeysCheck(ai *acmeInfo) checkT {
	c := checkT{Name: checkHistKeys}
	quoted := map[string]bool{}
	for _, k := range ai.QuotedHistKeys {
		quoted[hex.EncodeToString(k.spki)] = true
	}
	var missing []string
	for _, hk := range ai.HistKeys {
		b, _ := decodeSPKI(hk)
		if !quoted[hex.EncodeToString(b)] {
			fp := sha256.Sum256(b)
			missing = append(missing, "spki sha256 "+hex.EncodeToString(fp[:]))
		}
	}
	c.Got = fmt.Sprintf("%d hist_keys, %d without a quote", len(ai.HistKeys), len(missing))
	if len(missing) > 0 {
		c.Status, c.Detail = warn, "hist_keys without a quote: "+strings.Join(missing, ", ")
		c.Hint = "certificates with these keys are not vouched for by a TEE; the CT check fails if one is unexpired"
		return c
	}
	c.Status, c.Detail = pass, "every hist_key has a quote"
	return c
}

// activeCertCheck (older format): active_cert is the served certificate.
func activeCertCheck(ai *acmeInfo, served *x509.Certificate) checkT {
	c := checkT{Name: checkActiveCert}
	sfp := sha256.Sum256(served.Raw)
	c.Want = "sha256 " + hex.EncodeToString(sfp[:])
	if ai.ActiveCert == "" {
		c.Status, c.Detail = skip, "acme-info has no active_cert"
		return c
	}
	certs, err := evidence.ParseCertsPEM([]byte(ai.ActiveCert))
	if err != nil {
		c.Status, c.Detail = fail, "active_cert: "+err.Error()
		c.Hint = "active_cert must be the served certificate chain in PEM"
		return c
	}
	fp := sha256.Sum256(certs[0].Raw)
	c.Got = "sha256 " + hex.EncodeToString(fp[:])
	if !bytes.Equal(certs[0].Raw, served.Raw) {
		c.Status, c.Detail = warn, "active_cert is not the served certificate"
		c.Hint = "another gateway node may have answered, or the certificate was renewed meanwhile; the served key check above is what counts"
		return c
	}
	c.Status, c.Detail = pass, "active_cert is the served certificate"
	return c
}

// appInfo is the part of /.dstack/app-info (the gateway's guest-agent Info,
// unsigned) that is printed and compared.
type appInfo struct {
	AppID       string `json:"app_id"`
	InstanceID  string `json:"instance_id"`
	ComposeHash string `json:"compose_hash"`
	AppName     string `json:"app_name"`
	OSImageHash string `json:"os_image_hash"`
}

// appInfoCheck prints /.dstack/app-info and compares it with the identity
// the account quote measured. app-info is unsigned: a mismatch is a warning.
func appInfoCheck(ctx context.Context, t *target, quoted *report.Identity) (checkT, error) {
	c := checkT{Name: checkAppInfo}
	body, status, _, err := t.get(ctx, appInfoPath, "application/json")
	if err != nil {
		return c, err
	}
	if status != http.StatusOK {
		c.Status, c.Detail = skip, fmt.Sprintf("%s answered HTTP %d", appInfoPath, status)
		return c, nil
	}
	var ai appInfo
	if err := json.Unmarshal(body, &ai); err != nil {
		c.Status, c.Detail = warn, "app-info is not the JSON object of a guest-agent Info: "+err.Error()
		return c, nil
	}
	norm := func(s string) string { return strings.TrimPrefix(strings.ToLower(s), "0x") }
	c.Got = fmt.Sprintf("app_name %q app_id %s compose_hash %s instance_id %s os_image_hash %s", ai.AppName, norm(ai.AppID), norm(ai.ComposeHash), norm(ai.InstanceID), norm(ai.OSImageHash))
	if quoted == nil {
		c.Status, c.Detail = skip, "printed only: the account quote is not trusted, so there is nothing to compare with (app-info is unsigned)"
		return c, nil
	}
	c.Want = fmt.Sprintf("app_id %s compose_hash %s", quoted.AppID, quoted.ComposeHash)
	if norm(ai.AppID) != quoted.AppID || norm(ai.ComposeHash) != quoted.ComposeHash {
		c.Status, c.Detail = warn, "app-info (unsigned) disagrees with the identity the account quote measured"
		c.Hint = "trust the quote; app-info may come from another gateway node or version"
		return c, nil
	}
	c.Status, c.Detail = pass, "app-info (unsigned) agrees with the identity the account quote measured"
	return c, nil
}
