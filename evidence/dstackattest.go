package evidence

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// dstack's multi-platform attestation (its dstack-attest crate), the
// successor of the GetQuote response: what newer gateways put in acme-info's
// "attestation" fields and RA-TLS certificates carry in OID
// 1.3.6.1.4.1.62397.1.8. Its first byte names the encoding: 0x00 is the
// SCALE-encoded VersionedAttestation::V0
//
//	u8 0 (V0) · AttestationQuote (u8 variant; 0 = DstackTdx: quote Vec<u8>,
//	event_log Vec<TdxEvent{imr u32, event_type u32, digest Vec<u8>,
//	event String, event_payload Vec<u8>}>) · runtime_events
//	Vec<{event String, payload Vec<u8>}> · report_data [u8; 64] ·
//	config String
//
// with SCALE's compact lengths; a msgpack map is the newer V1 encoding.
// Only TDX is verified here; other platforms are named and refused.

// ErrUnsupportedAttestation is wrapped when an attestation is well formed
// but of a platform or encoding this verifier does not check.
var ErrUnsupportedAttestation = errors.New("unsupported attestation")

// maxAttestationBytes bounds an attestation, as dstack's decoder does.
const maxAttestationBytes = 10 << 20

// attestationPlatforms are AttestationQuote's variants, by SCALE index.
var attestationPlatforms = []string{"dstack-tdx", "dstack-gcp-tdx", "dstack-nitro-enclave", "dstack-amd-sev-snp", "dstack-aws-nitro-tpm"}

// QuoteJSONFromAttestation turns a dstack attestation (raw or hex) of a TDX
// platform into the GetQuote response form quote.json has, so that every
// check of a quote applies to it: the TDX quote, its event log, report_data
// and vm_config (the attestation's config).
func QuoteJSONFromAttestation(b []byte) ([]byte, error) {
	if s := strings.TrimSpace(string(b)); len(s) > 0 && isHexString(s) {
		raw, err := hex.DecodeString(strings.TrimPrefix(s, "0x"))
		if err != nil {
			return nil, fmt.Errorf("parsing attestation: %w", err)
		}
		b = raw
	}
	if len(b) == 0 || len(b) > maxAttestationBytes {
		return nil, fmt.Errorf("parsing attestation: %d bytes, want 1 to %d", len(b), maxAttestationBytes)
	}
	switch {
	case b[0] >= 0x80 && b[0] <= 0x8f || b[0] == 0xde || b[0] == 0xdf:
		return nil, fmt.Errorf("%w: the msgpack (V1) encoding of dstack attestations is not verified by this tool", ErrUnsupportedAttestation)
	case b[0] != 0:
		return nil, fmt.Errorf("parsing attestation: first byte %#02x is neither 0x00 (SCALE V0) nor a msgpack map (V1)", b[0])
	}
	d := &scaleReader{b: b[1:]}
	variant := d.byte()
	if d.err == nil && int(variant) < len(attestationPlatforms) && variant != 0 {
		return nil, fmt.Errorf("%w: platform %s; only dstack-tdx attestations are verified", ErrUnsupportedAttestation, attestationPlatforms[variant])
	}
	if d.err == nil && variant != 0 {
		return nil, fmt.Errorf("parsing attestation: unknown platform variant %d", variant)
	}
	quote := d.bytes()
	events := d.tdxEvents()
	d.runtimeEvents() // the TDX event log carries them too, with their IMR
	rd := d.fixed(64)
	config := d.string()
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d bytes after the attestation", len(d.b))
	}
	if d.err != nil {
		return nil, fmt.Errorf("parsing attestation: %w", d.err)
	}
	el, err := json.Marshal(events)
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]string{"quote": hex.EncodeToString(quote), "event_log": string(el),
		"report_data": hex.EncodeToString(rd), "vm_config": config})
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

// attestationEvent is an event as quote.json's event_log has it.
type attestationEvent struct {
	IMR       uint32 `json:"imr"`
	EventType uint32 `json:"event_type"`
	Digest    string `json:"digest"`
	Event     string `json:"event"`
	Payload   string `json:"event_payload"`
}

// maxAttestationEvents bounds an event log's length before it is read.
const maxAttestationEvents = 4096

// scaleReader reads SCALE values; the first error sticks.
type scaleReader struct {
	b   []byte
	err error
}

func (d *scaleReader) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("truncated or malformed %s", what)
	}
}

func (d *scaleReader) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail("byte")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *scaleReader) fixed(n int) []byte {
	if d.err != nil || len(d.b) < n {
		d.fail(fmt.Sprintf("%d-byte field", n))
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *scaleReader) u32() uint32 {
	if v := d.fixed(4); v != nil {
		return binary.LittleEndian.Uint32(v)
	}
	return 0
}

// compact reads a SCALE compact integer, bounded by what is left to read.
func (d *scaleReader) compact() int {
	if d.err != nil || len(d.b) == 0 {
		d.fail("length")
		return 0
	}
	var v uint64
	switch d.b[0] & 3 {
	case 0:
		v = uint64(d.b[0] >> 2)
		d.b = d.b[1:]
	case 1:
		if b := d.fixed(2); b != nil {
			v = uint64(binary.LittleEndian.Uint16(b) >> 2)
		}
	case 2:
		if b := d.fixed(4); b != nil {
			v = uint64(binary.LittleEndian.Uint32(b) >> 2)
		}
	default:
		n := int(d.b[0]>>2) + 4
		d.b = d.b[1:]
		b := d.fixed(n)
		for i := len(b) - 1; i >= 0; i-- {
			if v > 1<<56 {
				d.fail("length")
				return 0
			}
			v = v<<8 | uint64(b[i])
		}
	}
	if d.err == nil && v > uint64(len(d.b)) {
		d.fail("length")
		return 0
	}
	return int(v)
}

func (d *scaleReader) bytes() []byte { return d.fixed(d.compact()) }

func (d *scaleReader) string() string {
	b := d.bytes()
	if d.err == nil && !utf8.Valid(b) {
		d.fail("string")
	}
	return string(b)
}

func (d *scaleReader) tdxEvents() []attestationEvent {
	n := d.compact()
	if n > maxAttestationEvents {
		d.fail("event log")
		return nil
	}
	var events []attestationEvent
	for i := 0; i < n && d.err == nil; i++ {
		e := attestationEvent{IMR: d.u32(), EventType: d.u32()}
		e.Digest = hex.EncodeToString(d.bytes())
		e.Event = d.string()
		e.Payload = hex.EncodeToString(d.bytes())
		events = append(events, e)
	}
	return events
}

func (d *scaleReader) runtimeEvents() {
	n := d.compact()
	if n > maxAttestationEvents {
		d.fail("runtime events")
		return
	}
	for i := 0; i < n && d.err == nil; i++ {
		d.string()
		d.bytes()
	}
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
