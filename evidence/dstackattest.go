package evidence

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/tee-ingress/tee-ingress/evidence/dstackfmt"
)

// ErrUnsupportedAttestation is wrapped when an attestation is well formed
// but of a platform or encoding this verifier does not check.
var ErrUnsupportedAttestation = dstackfmt.ErrUnsupported

// QuoteJSONFromAttestation turns a dstack attestation (raw or hex; see
// package dstackfmt) of a TDX platform into the GetQuote response form
// quote.json has, so that every check of a quote applies to it: the TDX
// quote, its event log, report_data and vm_config (the attestation's
// config).
func QuoteJSONFromAttestation(b []byte) ([]byte, error) {
	if s := strings.TrimSpace(string(b)); len(s) > 0 && isHexString(s) {
		raw, err := hex.DecodeString(strings.TrimPrefix(s, "0x"))
		if err != nil {
			return nil, fmt.Errorf("parsing attestation: %w", err)
		}
		b = raw
	}
	a, err := dstackfmt.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("parsing attestation: %w", err)
	}
	return json.Marshal(map[string]string{"quote": hex.EncodeToString(a.Quote), "event_log": dstackfmt.EventsJSON(a.Events),
		"report_data": hex.EncodeToString(a.ReportData[:]), "vm_config": a.Config})
}

func isHexString(s string) bool {
	s = strings.TrimPrefix(s, "0x")
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return len(s)%2 == 0
}

// EncodeDstackAttestation writes q in dstack's attestation encoding (SCALE
// V0, dstack-tdx), as VerifyDstackAttestation and dstack's verifier read it.
func EncodeDstackAttestation(q *Quote) ([]byte, error) {
	events, err := dstackfmt.EventsFromJSON(q.EventLog)
	if err != nil {
		return nil, fmt.Errorf("encoding attestation: %w", err)
	}
	a := &dstackfmt.Attestation{Quote: q.Quote, Events: events, Config: q.VMConfig}
	copy(a.ReportData[:], q.ReportData)
	return dstackfmt.Encode(a), nil
}

// CheckAttestationFormat is the check that a dstack attestation decodes.
const CheckAttestationFormat = "dstack_attestation.format"

// VerifyDstackAttestation checks a dstack attestation (raw or hex) as VerifyQuote
// checks a GetQuote response, after CheckAttestationFormat. dstack strips
// the boot events (IMR 0-2) of attestations it embeds: their RTMRs are the
// OS image's, which dstack's own verifier checks against the measurement in
// vm_config, so here they are skipped, not failed; RTMR3, which carries the
// app identity, must replay. Platforms other than TDX are reported, never
// passed.
func VerifyDstackAttestation(att []byte, opts VerifyOptions) []Check {
	c := Check{Name: CheckAttestationFormat, Want: "a dstack-tdx attestation (SCALE V0)"}
	qj, err := QuoteJSONFromAttestation(att)
	switch {
	case errors.Is(err, ErrUnsupportedAttestation):
		c.Status, c.Detail = Skip, err.Error()
		c.Hint = "this verifier checks TDX only; nothing in this attestation was verified"
		return []Check{c}
	case err != nil:
		c.Status, c.Detail = Fail, err.Error()
		c.Hint = "the attestation is malformed: nothing it says can be checked"
		return []Check{c}
	}
	c.Status, c.Detail = Pass, "a dstack-tdx attestation: its TDX quote, event log, report_data and config follow"
	cs := []Check{c}
	for _, q := range VerifyQuote(qj, opts) {
		if q.Status == Fail && (q.Name == CheckRTMR+"0" || q.Name == CheckRTMR+"1" || q.Name == CheckRTMR+"2") {
			q.Status = Skip
			q.Detail = "dstack strips boot events from attestations: " + q.Name[len(CheckRTMR):] + " is the OS image's, checked by dstack's verifier against vm_config, not here"
		}
		cs = append(cs, q)
	}
	return cs
}
