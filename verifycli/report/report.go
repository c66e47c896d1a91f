package report

import (
	"time"

	"github.com/tee-ingress/tee-ingress/evidence"
)

// SchemaVersion is Report.Schema. It changes only on an incompatible change,
// which the schema's promise rules out short of a security need.
const SchemaVersion = 1

// Results of a run.
const (
	ResultPass = "pass" // no check failed (with strict: none warned or was skipped either)
	ResultFail = "fail" // at least one check failed
)

// Report is the outcome of one verifycli run. Runs that end in a usage,
// network or input error (exit status 2) print no report.
type Report struct {
	// Schema is SchemaVersion.
	Schema int `json:"schema"`
	// Command is the verifycli command: domain, gateway, tls, bundle or quote.
	Command string `json:"command"`
	// Target is what was verified, as given: a URL, a folder or a file.
	Target string `json:"target"`
	// Connect is the address dialled instead of the target's host
	// (--connect), empty when the host was resolved normally.
	Connect string `json:"connect,omitempty"`
	// CheckedAt is when the run started, in UTC.
	CheckedAt time.Time `json:"checked_at"`
	// Strict reports --strict: warn and skip then count as failures.
	Strict bool `json:"strict"`
	// Result is ResultPass or ResultFail; the exit status is 0 or 1 accordingly.
	Result string `json:"result"`
	// Summary counts the checks by status.
	Summary Summary `json:"summary"`
	// Checks are the steps in the order they ran, numbered from 1.
	Checks []Check `json:"checks"`
	// Identity is what the verified quote measured about the app, absent
	// when no quote was verified far enough to trust it.
	Identity *Identity `json:"identity,omitempty"`
	// Certificate is the leaf certificate the server presented (domain,
	// gateway, tls), absent for offline commands.
	Certificate *Certificate `json:"certificate,omitempty"`
	// AccountURI is the ACME account the evidence names (domain: the
	// bundle's acme-account.json; gateway: acme-info's account_uri).
	AccountURI string `json:"account_uri,omitempty"`
	// Nonce is the fresh nonce sent for a live quote or attestation, in hex.
	Nonce string `json:"nonce,omitempty"`
	// Layout names the evidence bundle's layout (domain, bundle): tee-ingress,
	// dstack-ingress 2.x, single certificate.
	Layout string `json:"layout,omitempty"`
}

// Summary counts checks by status.
type Summary struct {
	Pass int `json:"pass"`
	Fail int `json:"fail"`
	Warn int `json:"warn"`
	Skip int `json:"skip"`
	// Info counts values reported with nothing to compare them to.
	Info int `json:"info"`
}

// Statuses of a check, as in package evidence.
const (
	StatusPass = string(evidence.Pass)
	StatusFail = string(evidence.Fail)
	StatusWarn = string(evidence.Warn) // nothing proven wrong, but an auditor should look
	StatusSkip = string(evidence.Skip) // not performed; Detail says why
	StatusInfo = string(evidence.Info) // a value reported, nothing compared
)

// Check is one numbered step of the checklist.
type Check struct {
	// Step is the 1-based position in the checklist.
	Step int `json:"step"`
	// Name identifies the check and is stable across releases: evidence's
	// check names (quote.signature, file.sha256:cert.pem, ...), verifycli's
	// (tls.chain, dns.caa, ct.certificates, ...), with a prefix for a second
	// quote ("live.", "account.", "key.<n>.").
	Name string `json:"name"`
	// Status is one of the Status constants.
	Status string `json:"status"`
	// Want and Got are the values compared, in full, when there are any.
	Want string `json:"want,omitempty"`
	Got  string `json:"got,omitempty"`
	// Detail says what was checked, or why it failed or was skipped.
	Detail string `json:"detail,omitempty"`
	// Hint says what a failure means and what to do about it.
	Hint string `json:"hint,omitempty"`
}

// Identity is the app identity measured into RTMR3, lowercase hex (the key
// provider is JSON text). Empty strings are values the log did not hold.
type Identity struct {
	AppID       string `json:"app_id"`
	ComposeHash string `json:"compose_hash"`
	InstanceID  string `json:"instance_id"`
	KeyProvider string `json:"key_provider"`
	OSImageHash string `json:"os_image_hash"`
}

// Certificate describes a served leaf certificate.
type Certificate struct {
	// SHA256 is the SHA-256 of the leaf's DER, lowercase hex.
	SHA256 string `json:"sha256"`
	// SPKISHA256 is the SHA-256 of its SubjectPublicKeyInfo DER.
	SPKISHA256 string   `json:"spki_sha256"`
	Subject    string   `json:"subject"`
	Issuer     string   `json:"issuer"`
	DNSNames   []string `json:"dns_names"`
	// Serial is the serial number in lowercase hex.
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
}

// New builds a report from checks: numbers them, counts them and sets
// Result (with strict, warn and skip count as failures).
func New(command, target string, checkedAt time.Time, strict bool, checks []evidence.Check) *Report {
	r := &Report{
		Schema:    SchemaVersion,
		Command:   command,
		Target:    target,
		CheckedAt: checkedAt.UTC(),
		Strict:    strict,
		Result:    ResultPass,
		Checks:    make([]Check, 0, len(checks)),
	}
	for i, c := range checks {
		r.Checks = append(r.Checks, Check{Step: i + 1, Name: c.Name, Status: string(c.Status), Want: c.Want, Got: c.Got, Detail: c.Detail, Hint: c.Hint})
		switch c.Status {
		case evidence.Pass:
			r.Summary.Pass++
		case evidence.Fail:
			r.Summary.Fail++
		case evidence.Warn:
			r.Summary.Warn++
		case evidence.Info:
			r.Summary.Info++
		default:
			r.Summary.Skip++
		}
	}
	if evidence.Failed(checks, strict) {
		r.Result = ResultFail
	}
	return r
}

// Failed reports whether the run failed: Result is ResultFail.
func (r *Report) Failed() bool { return r.Result == ResultFail }
