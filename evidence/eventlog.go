package evidence

import (
	"bytes"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
)

// RuntimeEventType is the event_type of dstack runtime events (IMR 3): the
// guest agent measures app-id, compose-hash, instance-id, key-provider and the
// app's own events with it.
const RuntimeEventType = 0x08000001

// Limits on untrusted event logs: a real log has a few dozen events of a few
// hundred bytes; these bounds keep a hostile log from costing much.
const (
	maxEventLogBytes = 1 << 20
	maxEvents        = 4096
)

// Event is one entry of a dstack event log, as the guest agent encodes it.
type Event struct {
	// IMR is the RTMR the event extends (0..3).
	IMR uint32 `json:"imr"`
	// EventType is the TCG event type; RuntimeEventType for dstack runtime events.
	EventType uint32 `json:"event_type"`
	// Digest is the SHA-384 digest in hex. Boot events (IMR 0..2) need it; for
	// runtime events it may be empty (agents since dstack 0.5.6 strip it) and
	// is recomputed from Event and EventPayload either way.
	Digest string `json:"digest"`
	// Event is the runtime event's name ("app-id", ...); empty for most boot events.
	Event string `json:"event"`
	// EventPayload is the payload in hex; boot events may carry none.
	EventPayload string `json:"event_payload"`
}

// ParseEventLog decodes the event_log string of a GetQuote response: a JSON
// array of events. It checks every field's shape (IMR 0..3, digests of 48
// bytes or empty, payloads in hex) so that later steps can rely on them.
func ParseEventLog(s string) ([]Event, error) {
	if len(s) > maxEventLogBytes {
		return nil, fmt.Errorf("parsing event log: %d bytes, at most %d accepted", len(s), maxEventLogBytes)
	}
	var events []Event
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	if err := dec.Decode(&events); err != nil {
		return nil, fmt.Errorf("parsing event log: want a JSON array of {imr, event_type, digest, event, event_payload}: %w", err)
	}
	if dec.More() {
		return nil, errors.New("parsing event log: trailing data after the JSON array")
	}
	if events == nil {
		return nil, errors.New("parsing event log: want a JSON array, got null")
	}
	if len(events) > maxEvents {
		return nil, fmt.Errorf("parsing event log: %d events, at most %d accepted", len(events), maxEvents)
	}
	for i, e := range events {
		if e.IMR > 3 {
			return nil, fmt.Errorf("parsing event log: event %d: imr %d, want 0..3", i, e.IMR)
		}
		if e.Digest != "" {
			d, err := hex.DecodeString(e.Digest)
			if err != nil || len(d) != sha512.Size384 {
				return nil, fmt.Errorf("parsing event log: event %d: digest must be empty or 96 hex characters, got %q", i, truncate(e.Digest))
			}
		}
		if _, err := hex.DecodeString(e.EventPayload); err != nil {
			return nil, fmt.Errorf("parsing event log: event %d: event_payload is not hex: %w", i, err)
		}
		if e.IMR != 3 && e.EventType != RuntimeEventType && e.Digest == "" {
			return nil, fmt.Errorf("parsing event log: event %d (imr %d, type %#x): boot events need a digest", i, e.IMR, e.EventType)
		}
	}
	return events, nil
}

// Payload returns the decoded event payload (nil if it is not hex; ParseEventLog
// has rejected such events already).
func (e Event) Payload() []byte {
	b, _ := hex.DecodeString(e.EventPayload)
	return b
}

// RuntimeDigest is the digest dstack extends for a runtime event:
// SHA-384(le32(event_type) || ":" || event || ":" || payload).
func (e Event) RuntimeDigest() [48]byte {
	h := sha512.New384()
	var t [4]byte
	binary.LittleEndian.PutUint32(t[:], e.EventType)
	h.Write(t[:])
	h.Write([]byte(":"))
	h.Write([]byte(e.Event))
	h.Write([]byte(":"))
	h.Write(e.Payload())
	var d [48]byte
	h.Sum(d[:0])
	return d
}

// ReplayRTMRs recomputes RTMR0..3 from events: each starts at 48 zero bytes
// and rtmr = SHA-384(rtmr || digest) per event. Runtime events use the digest
// computed from their name and payload, never the one they carry: a log whose
// carried digest disagrees with its payload is rejected, because trusting the
// digest would let a forged payload (a fake app-id) replay cleanly.
func ReplayRTMRs(events []Event) ([4][48]byte, error) {
	var rtmr [4][48]byte
	for i, e := range events {
		if e.IMR > 3 {
			return rtmr, fmt.Errorf("replaying event %d: imr %d, want 0..3", i, e.IMR)
		}
		var d []byte
		if e.EventType == RuntimeEventType {
			c := e.RuntimeDigest()
			d = c[:]
			if e.Digest != "" {
				carried, err := hex.DecodeString(e.Digest)
				if err != nil || !bytes.Equal(carried, d) {
					return rtmr, fmt.Errorf("replaying event %d (%q): carried digest %s does not match the digest of its name and payload %x", i, e.Event, truncate(e.Digest), d)
				}
			}
		} else {
			var err error
			d, err = hex.DecodeString(e.Digest)
			if err != nil || len(d) != sha512.Size384 {
				return rtmr, fmt.Errorf("replaying event %d (imr %d, type %#x): digest must be 96 hex characters", i, e.IMR, e.EventType)
			}
		}
		h := sha512.New384()
		h.Write(rtmr[e.IMR][:])
		h.Write(d)
		h.Sum(rtmr[e.IMR][:0])
	}
	return rtmr, nil
}

// Identity is what the guest agent measured about the app into RTMR3 before
// system-ready. Hex strings are lowercase; empty when the event is absent.
type Identity struct {
	AppID       string `json:"app_id"`
	ComposeHash string `json:"compose_hash"`
	InstanceID  string `json:"instance_id"`
	// KeyProvider is the key-provider payload as text (JSON naming the KMS).
	KeyProvider string `json:"key_provider"`
	OSImageHash string `json:"os_image_hash"`
	// SystemReady reports whether the log contains system-ready; values after
	// it are app events and are ignored.
	SystemReady bool `json:"system_ready"`
}

// ExtractIdentity reads the identity events of IMR 3 that precede
// system-ready. It does not replay: only call it on a log whose RTMR3 replay
// matched the quote, or the values prove nothing. When an event repeats, the
// first occurrence wins.
func ExtractIdentity(events []Event) Identity {
	var id Identity
	set := func(dst *string, v string) {
		if *dst == "" {
			*dst = v
		}
	}
	for _, e := range events {
		if e.IMR != 3 || e.EventType != RuntimeEventType {
			continue
		}
		switch e.Event {
		case "system-ready":
			id.SystemReady = true
			return id
		case "app-id":
			set(&id.AppID, hex.EncodeToString(e.Payload()))
		case "compose-hash":
			set(&id.ComposeHash, hex.EncodeToString(e.Payload()))
		case "instance-id":
			set(&id.InstanceID, hex.EncodeToString(e.Payload()))
		case "os-image-hash":
			set(&id.OSImageHash, hex.EncodeToString(e.Payload()))
		case "key-provider":
			set(&id.KeyProvider, string(e.Payload()))
		}
	}
	return id
}

// truncate keeps error messages about hostile input short.
func truncate(s string) string {
	const max = 120
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
