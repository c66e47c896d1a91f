package agentsim

import (
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
)

// runtimeEventType is the event type dstack uses for its IMR 3 events.
const runtimeEventType = 0x08000001

// event is one measured event. Digest is always the real SHA-384 that was
// extended; the wire forms decide which of Digest and Payload are shown.
type event struct {
	IMR     int
	Type    uint32
	Name    string
	Digest  []byte
	Payload []byte
}

// wireEvent is an event log entry as the agent encodes it.
type wireEvent struct {
	IMR          int    `json:"imr"`
	EventType    uint32 `json:"event_type"`
	Digest       string `json:"digest"`
	Event        string `json:"event"`
	EventPayload string `json:"event_payload"`
}

// runtimeDigest is how dstack measures a runtime event:
// SHA-384(le32(event_type) || ":" || event || ":" || payload).
func runtimeDigest(name string, payload []byte) []byte {
	h := sha512.New384()
	var t [4]byte
	binary.LittleEndian.PutUint32(t[:], runtimeEventType)
	h.Write(t[:])
	h.Write([]byte(":"))
	h.Write([]byte(name))
	h.Write([]byte(":"))
	h.Write(payload)
	return h.Sum(nil)
}

func runtimeEvent(name string, payload []byte) event {
	return event{IMR: 3, Type: runtimeEventType, Name: name, Digest: runtimeDigest(name, payload), Payload: payload}
}

// bootEvent measures payload as firmware and bootloader do: SHA-384 of the
// data. The payloads are made up but shaped like OVMF's and the kernel's.
func bootEvent(imr int, typ uint32, name string, payload []byte) event {
	sum := sha512.Sum384(payload)
	return event{IMR: imr, Type: typ, Name: name, Digest: sum[:], Payload: payload}
}

// bootEvents is a short, fixed stand-in for the firmware and kernel events of
// IMR 0 to 2 of a dstack OS image.
func bootEvents() []event {
	const (
		evSeparator            = 0x00000004
		evEventTag             = 0x00000006
		evPlatformConfigFlags  = 0x0000000a
		evEFIVariableDriverCfg = 0x80000001
		evEFIVariableBoot      = 0x80000002
		evEFIBootServicesApp   = 0x80000003
		evEFIAction            = 0x80000007
		evEFIPlatformFirmware2 = 0x8000000a
		evEFIHandoffTables2    = 0x8000000b
	)
	sep := []byte{0, 0, 0, 0}
	return []event{
		bootEvent(0, evEFIHandoffTables2, "", []byte("\x09TdxTable\x00dstack-simulator")),
		bootEvent(0, evEFIPlatformFirmware2, "", []byte("\x29Fv(XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX)dstack-simulator-ovmf")),
		bootEvent(0, evEFIVariableDriverCfg, "", utf16Var("SecureBoot")),
		bootEvent(0, evEFIVariableDriverCfg, "", utf16Var("PK")),
		bootEvent(0, evEFIVariableDriverCfg, "", utf16Var("KEK")),
		bootEvent(0, evSeparator, "", sep),
		bootEvent(0, evPlatformConfigFlags, "acpi-loader", []byte("ACPI DATA dstack-simulator loader")),
		bootEvent(0, evPlatformConfigFlags, "acpi-rsdp", []byte("ACPI DATA dstack-simulator rsdp")),
		bootEvent(0, evPlatformConfigFlags, "acpi-tables", []byte("ACPI DATA dstack-simulator tables")),
		bootEvent(1, evEFIBootServicesApp, "", []byte("dstack-simulator kernel image")),
		bootEvent(0, evEFIVariableBoot, "", utf16Var("BootOrder")),
		bootEvent(1, evEFIAction, "", []byte("Calling EFI Application from Boot Option")),
		bootEvent(1, evSeparator, "", sep),
		bootEvent(2, evEventTag, "", []byte("LOADED_IMAGE::LoadOptions console=ttyS0 dstack.simulator=1")),
		bootEvent(2, evEventTag, "", []byte("Linux initrd dstack-simulator")),
		bootEvent(1, evEFIAction, "", []byte("Exit Boot Services Invocation")),
		bootEvent(1, evEFIAction, "", []byte("Exit Boot Services Returned with Success")),
	}
}

// utf16Var is a UEFI variable event payload: a vendor GUID and the variable
// name in UTF-16LE (ASCII names only).
func utf16Var(name string) []byte {
	b := []byte{0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c}
	for _, r := range name {
		b = append(b, byte(r), 0)
	}
	return b
}

// wire renders events in the full form (digest and payload everywhere, as
// agents before dstack 0.5.6) or the stripped form (boot events carry only
// their digest, runtime events only their payload with an empty digest).
func wire(events []event, stripped bool) []wireEvent {
	out := make([]wireEvent, 0, len(events))
	for _, e := range events {
		w := wireEvent{IMR: e.IMR, EventType: e.Type, Event: e.Name}
		switch {
		case !stripped:
			w.Digest = hex.EncodeToString(e.Digest)
			w.EventPayload = hex.EncodeToString(e.Payload)
		case e.IMR == 3:
			w.EventPayload = hex.EncodeToString(e.Payload)
		default:
			w.Digest = hex.EncodeToString(e.Digest)
		}
		out = append(out, w)
	}
	return out
}

// replay computes the RTMRs a log extends: each starts as 48 zero bytes and
// becomes SHA-384(rtmr || digest) per event.
func replay(events []event) [4][48]byte {
	var rtmr [4][48]byte
	for _, e := range events {
		if e.IMR < 0 || e.IMR > 3 {
			continue
		}
		h := sha512.New384()
		h.Write(rtmr[e.IMR][:])
		h.Write(e.Digest)
		h.Sum(rtmr[e.IMR][:0])
	}
	return rtmr
}
