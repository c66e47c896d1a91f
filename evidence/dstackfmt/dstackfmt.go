// Package dstackfmt reads and writes dstack's binary evidence formats: the
// multi-platform attestation (its dstack-attest crate), SCALE-encoded
// VersionedAttestation::V0
//
//	u8 0 (V0) · AttestationQuote (u8 variant; 0 = DstackTdx: quote Vec<u8>,
//	event_log Vec<TdxEvent{imr u32, event_type u32, digest Vec<u8>,
//	event String, event_payload Vec<u8>}>) · runtime_events
//	Vec<{event String, payload Vec<u8>}> · report_data [u8; 64] ·
//	config String
//
// with SCALE's compact lengths, and the X.509 extensions of its RA-TLS
// certificates (its ra-tls crate). It only decodes and encodes: package
// evidence verifies. The guest-agent simulator uses it too, so there is
// one implementation of the format.
//
// Start with Decode and Encode.
package dstackfmt

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Event is one TDX event log entry, as the attestation carries it.
type Event struct {
	IMR       uint32
	EventType uint32
	Digest    []byte
	Name      string
	Payload   []byte
}

// Attestation is a decoded dstack-tdx attestation.
type Attestation struct {
	Quote      []byte // the TDX quote
	Events     []Event
	ReportData [64]byte
	Config     string // vm_config
}

// ErrUnsupported is wrapped when an attestation is well formed but of a
// platform or encoding this package does not read.
var ErrUnsupported = errors.New("unsupported attestation")

// MaxBytes bounds an attestation, as dstack's decoder does.
const MaxBytes = 10 << 20

// maxEvents bounds an event log's length before it is read.
const maxEvents = 4096

// platforms are AttestationQuote's variants, by SCALE index.
var platforms = []string{"dstack-tdx", "dstack-gcp-tdx", "dstack-nitro-enclave", "dstack-amd-sev-snp", "dstack-aws-nitro-tpm"}

// Decode reads a dstack-tdx attestation. Other platforms and the msgpack
// (V1) encoding are ErrUnsupported, naming what they are.
func Decode(b []byte) (*Attestation, error) {
	if len(b) == 0 || len(b) > MaxBytes {
		return nil, fmt.Errorf("%d bytes, want 1 to %d", len(b), MaxBytes)
	}
	switch {
	case b[0] >= 0x80 && b[0] <= 0x8f || b[0] == 0xde || b[0] == 0xdf:
		return nil, fmt.Errorf("%w: the msgpack (V1) encoding of dstack attestations is not read by this tool", ErrUnsupported)
	case b[0] != 0:
		return nil, fmt.Errorf("first byte %#02x is neither 0x00 (SCALE V0) nor a msgpack map (V1)", b[0])
	}
	d := &reader{b: b[1:]}
	variant := d.byte()
	switch {
	case d.err != nil:
		return nil, d.err
	case int(variant) < len(platforms) && variant != 0:
		return nil, fmt.Errorf("%w: platform %s; only dstack-tdx attestations are verified", ErrUnsupported, platforms[variant])
	case variant != 0:
		return nil, fmt.Errorf("unknown platform variant %d", variant)
	}
	a := &Attestation{Quote: d.bytes(), Events: d.events()}
	d.runtimeEvents() // the TDX event log carries them too, with their IMR
	copy(a.ReportData[:], d.fixed(64))
	a.Config = d.string()
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d bytes after the attestation", len(d.b))
	}
	if d.err != nil {
		return nil, d.err
	}
	return a, nil
}

// Encode writes a as a SCALE V0 dstack-tdx attestation, with no separate
// runtime events (the TDX event log carries them).
func Encode(a *Attestation) []byte {
	w := &writer{}
	w.b = append(w.b, 0, 0) // V0, DstackTdx
	w.bytes(a.Quote)
	w.compact(len(a.Events))
	for _, e := range a.Events {
		w.b = binary.LittleEndian.AppendUint32(w.b, e.IMR)
		w.b = binary.LittleEndian.AppendUint32(w.b, e.EventType)
		w.bytes(e.Digest)
		w.bytes([]byte(e.Name))
		w.bytes(e.Payload)
	}
	w.compact(0)
	w.b = append(w.b, a.ReportData[:]...)
	w.bytes([]byte(a.Config))
	return w.b
}

// jsonEvent is an event as a GetQuote response's event_log has it.
type jsonEvent struct {
	IMR       uint32 `json:"imr"`
	EventType uint32 `json:"event_type"`
	Digest    string `json:"digest"`
	Event     string `json:"event"`
	Payload   string `json:"event_payload"`
}

// EventsFromJSON reads a GetQuote response's event_log.
func EventsFromJSON(s string) ([]Event, error) {
	var js []jsonEvent
	if err := json.Unmarshal([]byte(s), &js); err != nil {
		return nil, fmt.Errorf("event log: %w", err)
	}
	events := make([]Event, 0, len(js))
	for _, e := range js {
		digest, err1 := hex.DecodeString(e.Digest)
		payload, err2 := hex.DecodeString(e.Payload)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("event %q: %w", e.Event, err)
		}
		events = append(events, Event{IMR: e.IMR, EventType: e.EventType, Digest: digest, Name: e.Event, Payload: payload})
	}
	return events, nil
}

// EventsJSON writes events as a GetQuote response's event_log.
func EventsJSON(events []Event) string {
	js := make([]jsonEvent, 0, len(events))
	for _, e := range events {
		js = append(js, jsonEvent{IMR: e.IMR, EventType: e.EventType, Digest: hex.EncodeToString(e.Digest), Event: e.Name,
			Payload: hex.EncodeToString(e.Payload)})
	}
	b, _ := json.Marshal(js) // strings and numbers: cannot fail
	return string(b)
}

// reader reads SCALE values; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (d *reader) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("truncated or malformed %s", what)
	}
}

func (d *reader) byte() byte {
	if v := d.fixed(1); v != nil {
		return v[0]
	}
	return 0
}

func (d *reader) fixed(n int) []byte {
	if d.err != nil || len(d.b) < n {
		d.fail(fmt.Sprintf("%d-byte field", n))
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *reader) u32() uint32 {
	if v := d.fixed(4); v != nil {
		return binary.LittleEndian.Uint32(v)
	}
	return 0
}

// compact reads a SCALE compact integer, bounded by what is left to read.
func (d *reader) compact() int {
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

func (d *reader) bytes() []byte { return d.fixed(d.compact()) }

func (d *reader) string() string {
	b := d.bytes()
	if d.err == nil && !utf8.Valid(b) {
		d.fail("string")
	}
	return string(b)
}

func (d *reader) events() []Event {
	n := d.compact()
	if n > maxEvents {
		d.fail("event log")
		return nil
	}
	var events []Event
	for i := 0; i < n && d.err == nil; i++ {
		e := Event{IMR: d.u32(), EventType: d.u32()}
		e.Digest, e.Name, e.Payload = d.bytes(), d.string(), d.bytes()
		events = append(events, e)
	}
	return events
}

func (d *reader) runtimeEvents() {
	n := d.compact()
	if n > maxEvents {
		d.fail("runtime events")
		return
	}
	for i := 0; i < n && d.err == nil; i++ {
		d.string()
		d.bytes()
	}
}

type writer struct{ b []byte }

// compact writes n (below 2^30: an attestation is at most MaxBytes).
func (w *writer) compact(n int) {
	switch {
	case n < 1<<6:
		w.b = append(w.b, byte(n<<2))
	case n < 1<<14:
		w.b = binary.LittleEndian.AppendUint16(w.b, uint16(n<<2|1))
	default:
		w.b = binary.LittleEndian.AppendUint32(w.b, uint32(n<<2|2))
	}
}

func (w *writer) bytes(p []byte) {
	w.compact(len(p))
	w.b = append(w.b, p...)
}
