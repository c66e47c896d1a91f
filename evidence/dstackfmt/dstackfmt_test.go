package dstackfmt

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// TestRoundTrip: what Encode writes, Decode reads back the same, also with
// lengths that need SCALE's two- and four-byte compact forms.
func TestRoundTrip(t *testing.T) {
	a := &Attestation{Quote: bytes.Repeat([]byte{4}, 70000), Config: `{"os_image_hash":""}`,
		Events: []Event{{IMR: 0, EventType: 10, Digest: bytes.Repeat([]byte{1}, 48), Name: "acpi-tables", Payload: []byte("ACPI DATA")},
			{IMR: 3, EventType: 0x08000001, Digest: []byte{}, Name: "app-id", Payload: bytes.Repeat([]byte{7}, 20)}}}
	a.ReportData[0], a.ReportData[63] = 1, 2
	got, err := Decode(Encode(a))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Events[1], a.Events[1]) || !bytes.Equal(got.Quote, a.Quote) || got.ReportData != a.ReportData || got.Config != a.Config {
		t.Fatalf("round trip differs")
	}
	if back, err := EventsFromJSON(EventsJSON(a.Events)); err != nil || !reflect.DeepEqual(back[0], a.Events[0]) {
		t.Fatalf("event log JSON round trip: %v", err)
	}
	enc := Encode(a)
	if _, err := Decode(append(enc, 0)); err == nil || !strings.Contains(err.Error(), "after the attestation") {
		t.Fatalf("trailing byte: %v", err)
	}
	if _, err := Decode([]byte{0, 3}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("sev-snp: %v", err)
	}
}
