package evidence

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-tdx-guest/verify"
	"github.com/google/go-tdx-guest/verify/trust"
)

// Status is the outcome of one check.
type Status string

// The statuses of a check.
const (
	Pass Status = "pass"
	Fail Status = "fail"
	// Warn: nothing is proven wrong, but something an auditor should look at.
	Warn Status = "warn"
	// Skip: the check was not performed (no expected value, or an earlier check failed).
	Skip Status = "skip"
	// Info: a value reported, with nothing to compare it to; neither a
	// proof nor a problem, and --strict does not count it.
	Info Status = "info"
)

// GotNonIntelRoot starts the Got of a passing quote.signature check when the
// chain ends at an extra root (--tdx-root: a simulator, a test CA), not at
// Intel's: a valid signature, but not a TEE's.
const GotNonIntelRoot = "valid under a root other than Intel's"

// Check is one verification step, for a numbered checklist or a JSON report.
type Check struct {
	// Name identifies the check; stable across releases (the Check* constants).
	Name   string `json:"name"`
	Status Status `json:"status"`
	// Want and Got are the values compared, when there are any.
	Want string `json:"want,omitempty"`
	Got  string `json:"got,omitempty"`
	// Detail says what was checked, or why it failed.
	Detail string `json:"detail,omitempty"`
	// Hint says what a failure means or what to do about it.
	Hint string `json:"hint,omitempty"`
}

// Names of checks. Per-file checks append ":<file name>".
const (
	CheckSHA256Sum       = "sha256sum.txt"           // sha256sum.txt present and well formed
	CheckFileHash        = "file.sha256"             // ":<name>": the file matches its line in sha256sum.txt
	CheckFilesListed     = "files.listed"            // every bundle file is listed, the required ones exist
	CheckNoPrivateKey    = "files.no_private_key"    // no file contains "PRIVATE KEY"
	CheckAccount         = "acme-account.json"       // account record parses; Got is the account URI
	CheckCert            = "cert"                    // ":<name>": chain parses, leaf first, covers its domain
	CheckHistory         = "history.json"            // history parses and lists the current leaves
	CheckQuoteJSON       = "quote.json"              // quote.json parses
	CheckQuoteFormat     = "quote.format"            // TDX v4 quote layout
	CheckQuoteSignature  = "quote.signature"         // PCK chain to a trusted root, QE report, quote signature
	CheckQuoteDebug      = "quote.debug"             // not a debug TD
	CheckReportData      = "quote.report_data"       // report_data binds what it must (sha256sum.txt, fingerprint)
	CheckReportDataField = "quote.report_data_field" // quote.json's report_data field agrees with the quote
	CheckEventLog        = "eventlog.parse"          // event log parses
	CheckRTMR            = "eventlog.rtmr"           // "0".."3" appended: the log replays to the quoted RTMR
	CheckAppID           = "identity.app_id"
	CheckComposeHash     = "identity.compose_hash"
	CheckInstanceID      = "identity.instance_id"
	CheckKeyProvider     = "identity.key_provider"
	CheckOSImageHash     = "identity.os_image_hash"
	CheckAttestationJSON = "attestation.json"        // /attestation body parses
	CheckFingerprint     = "attestation.fingerprint" // certFingerprint is the pinned certificate's
)

// VerifyOptions says what to trust and expect. The zero value trusts Intel's
// root only, expects a zero second half of report_data, and compares no
// identity values.
type VerifyOptions struct {
	// TrustedRootsPEM holds more TDX root CAs to trust besides Intel's, in
	// PEM (the simulator's, for development). Nil: Intel's root only.
	TrustedRootsPEM []byte
	// Nonce is the nonce a live quote must carry in the second half of
	// report_data. Nil: the second half must be zero (the published quote).
	Nonce *[32]byte
	// ReportData is the report_data VerifyQuote compares the quote with.
	// Nil: not compared (the check is skipped). Other functions compute
	// their own.
	ReportData []byte
	// AppID is the expected app-id in hex. Empty: not compared.
	AppID string
	// ComposeHash is the expected compose-hash in hex. Empty: not compared.
	ComposeHash string
	// ComposeJSON is the app's raw app-compose.json; its SHA-256 must be the
	// compose-hash. Nil: not compared.
	ComposeJSON []byte
	// Now is the time certificates are checked at. Zero: the current time.
	Now time.Time
	// Collateral fetches Intel's collateral (TCB info, QE identity, CRLs) to
	// check TCB status and revocation; needs the network. False: offline.
	Collateral bool
	// Getter fetches collateral. Nil: go-tdx-guest's default HTTPS getter
	// (Intel PCS).
	Getter trust.HTTPSGetter
}

// Failed reports whether any check failed; with strict, warn and skip count too.
func Failed(checks []Check, strict bool) bool {
	for _, c := range checks {
		if c.Status == Fail || strict && (c.Status == Warn || c.Status == Skip) {
			return true
		}
	}
	return false
}

// VerifyQuote checks a GetQuote response on its own (`verifycli quote`): the
// quote's signature up to a trusted root, not a debug TD, the event log
// replaying to RTMR0..3, the identity values, and report_data when
// opts.ReportData is set.
func VerifyQuote(quoteJSON []byte, opts VerifyOptions) []Check {
	q, err := ParseQuoteJSON(quoteJSON)
	var want *[64]byte
	if opts.ReportData != nil {
		var rd [64]byte
		if len(opts.ReportData) != 64 {
			return []Check{{Name: CheckReportData, Status: Fail, Detail: fmt.Sprintf("expected report_data has %d bytes; want 64", len(opts.ReportData))}}
		}
		copy(rd[:], opts.ReportData)
		want = &rd
	}
	return quoteChecks(q, err, want, "the expected report_data", opts, true)
}

// quoteChecks verifies a parsed quote.json. want is the report_data it must
// carry (nil: skip); what names it for messages. With tdx false only the
// layout and report_data are checked (no signature, event log, identity).
func quoteChecks(q *Quote, perr error, want *[64]byte, what string, opts VerifyOptions, tdx bool) []Check {
	var cs []Check
	if perr != nil {
		return append(cs, Check{Name: CheckQuoteJSON, Status: Fail, Detail: perr.Error(),
			Hint: "quote.json must be the guest agent's GetQuote response; an error body or a truncated file proves nothing"})
	}
	cs = append(cs, Check{Name: CheckQuoteJSON, Status: Pass, Detail: "quote.json parses"})
	tq, err := ParseTDQuote(q.Quote)
	if err != nil {
		return append(cs, Check{Name: CheckQuoteFormat, Status: Fail, Detail: err.Error(), Hint: "the quote is not a TDX v4 quote"})
	}
	cs = append(cs, Check{Name: CheckQuoteFormat, Status: Pass, Detail: "TDX quote version 4", Got: fmt.Sprintf("mrtd %x", tq.MRTD)})
	if tdx {
		cs = append(cs, signatureCheck(tq, opts))
		debug := Check{Name: CheckQuoteDebug, Status: Pass, Want: "td_attributes bit 0 clear", Got: fmt.Sprintf("td_attributes %x", tq.TDAttributes), Detail: "production TD"}
		if tq.Debug() {
			debug.Status, debug.Detail = Fail, "debug TD: the host can read and change its memory"
			debug.Hint = "a debug TD proves nothing; deploy without debug"
		}
		cs = append(cs, debug)
	}
	cs = append(cs, reportDataCheck(tq, want, what))
	field := Check{Name: CheckReportDataField, Status: Pass, Want: hex.EncodeToString(tq.ReportData[:]), Detail: "quote.json's report_data field matches the quote"}
	switch {
	case q.ReportData == nil:
		field.Status, field.Detail = Skip, "quote.json has no report_data field (legacy agent)"
	case !bytes.Equal(q.ReportData, tq.ReportData[:]):
		field.Status, field.Got = Fail, hex.EncodeToString(q.ReportData)
		field.Detail = "quote.json's report_data field differs from the report_data signed in the quote"
		field.Hint = "the field was edited; only the quote's own report_data counts"
	default:
		field.Got = field.Want
	}
	cs = append(cs, field)
	if tdx {
		id := eventLogChecks(q, tq, opts)
		if sig := checkByNameIn(cs, CheckQuoteSignature); sig != nil && sig.Status != Pass {
			// Values from a quote that is not authentic prove nothing; say so
			// where a reader looks, without failing a second time.
			for i := range id {
				if id[i].Status == Pass {
					id[i].Detail += " (but the quote's signature did not verify, so this proves nothing)"
				}
			}
		}
		cs = append(cs, id...)
	}
	return cs
}

// signatureCheck runs go-tdx-guest with an explicit root pool (Intel's plus
// any extra) and fresh Options, as the library writes into them.
func signatureCheck(tq *TDQuote, opts VerifyOptions) Check {
	c := Check{Name: CheckQuoteSignature, Want: "PCK chain to a trusted root; QE report and quote signatures valid"}
	pool := x509.NewCertPool()
	pool.AddCert(IntelRootCA())
	roots := "Intel SGX Root CA"
	if opts.TrustedRootsPEM != nil {
		certs, err := ParseCertsPEM(opts.TrustedRootsPEM)
		if err != nil {
			c.Status, c.Detail = Fail, "extra TDX root: "+err.Error()
			c.Hint = "pass a PEM file of CERTIFICATE blocks as the TDX root (--tdx-root)"
			return c
		}
		for _, cert := range certs {
			pool.AddCert(cert)
			roots += ", " + cert.Subject.String()
		}
	}
	vo := &verify.Options{TrustedRoots: pool, Now: opts.Now, GetCollateral: opts.Collateral, CheckRevocations: opts.Collateral, Getter: opts.Getter}
	if vo.Now.IsZero() {
		vo.Now = time.Now()
	}
	if opts.Collateral && vo.Getter == nil {
		vo.Getter = trust.DefaultHTTPSGetter()
	}
	if err := verifyTdxQuote(tq, vo); err != nil {
		c.Status, c.Got, c.Detail = Fail, err.Error(), "quote signature verification failed (trusted roots: "+roots+")"
		c.Hint = "the quote was not produced by a genuine TDX module under a trusted root, or it was altered"
		return c
	}
	c.Status, c.Got = Pass, "valid under Intel's root"
	c.Detail = "signed through a PCK chain to " + roots
	if opts.TrustedRootsPEM != nil && !underIntel(tq, vo) {
		c.Got = GotNonIntelRoot
		c.Detail = "signed through a PCK chain to an extra root (" + strings.TrimPrefix(roots, "Intel SGX Root CA, ") + "), not Intel's: this is not a TEE"
	}
	if opts.Collateral {
		c.Detail += "; collateral and revocation checked"
	} else {
		c.Detail += "; TCB status not checked (offline)"
	}
	return c
}

// underIntel: the quote also verifies with Intel's root alone.
func underIntel(tq *TDQuote, vo *verify.Options) bool {
	pool := x509.NewCertPool()
	pool.AddCert(IntelRootCA())
	o := *vo
	o.TrustedRoots = pool
	return verifyTdxQuote(tq, &o) == nil
}

// reportDataCheck compares the signed report_data with want.
func reportDataCheck(tq *TDQuote, want *[64]byte, what string) Check {
	c := Check{Name: CheckReportData, Got: hex.EncodeToString(tq.ReportData[:])}
	if want == nil {
		c.Status, c.Detail = Skip, "no expected report_data given"
		return c
	}
	c.Want = hex.EncodeToString(want[:])
	if tq.ReportData != *want {
		c.Status = Fail
		c.Detail = "report_data does not bind " + what
		switch {
		case bytes.Equal(tq.ReportData[:32], want[:32]):
			c.Detail += ": first half matches, second half (nonce) differs"
			c.Hint = "the quote was made for another nonce: a replayed or stale live quote"
		default:
			c.Hint = "the quote vouches for different content: files changed after quoting, or quote.json comes from another bundle"
		}
		return c
	}
	c.Status, c.Detail = Pass, "report_data binds "+what
	return c
}

// eventLogChecks replays RTMR0..3 and extracts identity values; the values
// count only when RTMR3 replays.
func eventLogChecks(q *Quote, tq *TDQuote, opts VerifyOptions) []Check {
	var cs []Check
	events, err := ParseEventLog(q.EventLog)
	if err != nil {
		cs = append(cs, Check{Name: CheckEventLog, Status: Fail, Detail: err.Error(), Hint: "the event log is malformed; nothing in it can be trusted"})
		return append(cs, identityChecks(Identity{}, false, "event log unreadable", opts)...)
	}
	cs = append(cs, Check{Name: CheckEventLog, Status: Pass, Detail: fmt.Sprintf("%d events", len(events))})
	rtmrs, rerr := ReplayRTMRs(events)
	ok3 := false
	for i := range 4 {
		c := Check{Name: fmt.Sprintf("%s%d", CheckRTMR, i), Want: hex.EncodeToString(tq.RTMRs[i][:])}
		switch {
		case rerr != nil:
			c.Status, c.Detail = Fail, rerr.Error()
			c.Hint = "an event was altered: its payload no longer matches its digest"
		case rtmrs[i] != tq.RTMRs[i]:
			c.Status, c.Got = Fail, hex.EncodeToString(rtmrs[i][:])
			c.Detail = fmt.Sprintf("replaying the IMR %d events does not give the quoted RTMR%d", i, i)
			c.Hint = "the event log was altered or belongs to another quote"
		default:
			c.Status, c.Got = Pass, c.Want
			c.Detail = fmt.Sprintf("IMR %d events replay to the quoted RTMR%d", i, i)
			ok3 = ok3 || i == 3
		}
		cs = append(cs, c)
	}
	return append(cs, identityChecks(ExtractIdentity(events), ok3, "RTMR3 does not replay", opts)...)
}

// identityChecks reports the identity values, compared with expectations
// when given. Without a replayed RTMR3 they prove nothing and fail.
func identityChecks(id Identity, trusted bool, why string, opts VerifyOptions) []Check {
	type item struct {
		name, label, got string
		want             []string // expected values, all must equal got
		wantFrom         string
	}
	var composeWants []string
	var composeFrom []string
	if opts.ComposeHash != "" {
		composeWants = append(composeWants, normHex(opts.ComposeHash))
		composeFrom = append(composeFrom, "--compose-hash")
	}
	if opts.ComposeJSON != nil {
		h := sha256.Sum256(opts.ComposeJSON)
		composeWants = append(composeWants, hex.EncodeToString(h[:]))
		composeFrom = append(composeFrom, "SHA-256 of the app-compose file")
	}
	var appWants []string
	if opts.AppID != "" {
		appWants = []string{normHex(opts.AppID)}
	}
	items := []item{
		{CheckAppID, "app-id", id.AppID, appWants, "--app-id"},
		{CheckComposeHash, "compose-hash", id.ComposeHash, composeWants, strings.Join(composeFrom, " and ")},
		{CheckInstanceID, "instance-id", id.InstanceID, nil, ""},
		{CheckKeyProvider, "key-provider", id.KeyProvider, nil, ""},
		{CheckOSImageHash, "os-image-hash", id.OSImageHash, nil, ""},
	}
	var cs []Check
	for _, it := range items {
		c := Check{Name: it.name, Got: it.got}
		switch {
		case !trusted:
			// Not compared: the check that says why (the signature, the
			// replay) fails on its own, and one tampering fails one check.
			c.Status = Skip
			c.Detail = it.label + " not trusted, so not compared: " + why
		case len(it.want) > 0 && (it.got == "" || !allEqual(it.want, it.got)):
			c.Status, c.Want = Fail, strings.Join(it.want, " / ")
			c.Detail = it.label + " differs from the expected value (" + it.wantFrom + ")"
			c.Hint = "this quote comes from another app or another version of its compose file"
		case len(it.want) > 0:
			c.Status, c.Want = Pass, it.want[0]
			c.Detail = it.label + " matches " + it.wantFrom
		case it.got == "" && (it.name == CheckAppID || it.name == CheckComposeHash || it.name == CheckInstanceID):
			c.Status, c.Detail = Warn, it.label+" event missing before system-ready"
			c.Hint = "not a dstack event log, or an agent that does not measure the app identity"
		case it.got == "":
			c.Status, c.Detail = Skip, it.label+" not measured by this agent"
		default:
			c.Status, c.Detail = Info, it.label+" measured in RTMR3, not compared with an expected value"
		}
		cs = append(cs, c)
	}
	return cs
}

func checkByNameIn(cs []Check, name string) *Check {
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	return nil
}

func allEqual(want []string, got string) bool {
	for _, w := range want {
		if w != got {
			return false
		}
	}
	return true
}

// normHex lowercases a hex value and drops a 0x prefix.
func normHex(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	return strings.TrimPrefix(s, "0x")
}

// ParseCertsPEM reads every CERTIFICATE block of b (other blocks are
// ignored); there must be at least one.
func ParseCertsPEM(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate %d: %w", len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return out, nil
}

// verifyTdxQuote is verify.TdxQuote with a panic on malformed input turned
// into a failure: the parser of the same library panicked on a bad length
// field (see quoteToProto), and an auditor's verifier must report, not crash.
func verifyTdxQuote(tq *TDQuote, vo *verify.Options) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed quote: go-tdx-guest failed on it: %v", r)
		}
	}()
	return verify.TdxQuote(tq.Proto, vo)
}
