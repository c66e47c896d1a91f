package evidence

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// maxHistoryEntries bounds history.json; a deployment renewing a handful of
// domains every 60 days stays far below it for decades.
const maxHistoryEntries = 100000

// HistoryEntry describes one certificate this deployment has served.
type HistoryEntry struct {
	// Domains are the leaf's DNS names (SANs) in certificate order.
	Domains []string `json:"domains"`
	// Serial is the serial number in lowercase hex, as crt.sh shows it.
	Serial string `json:"serial"`
	// SHA256 is the SHA-256 of the leaf's DER, lowercase hex (the certificate fingerprint).
	SHA256 string `json:"sha256"`
	// SPKISHA256 is the SHA-256 of the leaf's SubjectPublicKeyInfo DER, lowercase hex.
	SPKISHA256 string    `json:"spki_sha256"`
	NotBefore  time.Time `json:"not_before"`
	NotAfter   time.Time `json:"not_after"`
}

// history is the wire form of history.json; an object so that fields can be added.
type history struct {
	Certificates []HistoryEntry `json:"certificates"`
}

// NewHistoryEntry describes leaf.
func NewHistoryEntry(leaf *x509.Certificate) HistoryEntry {
	fp := sha256.Sum256(leaf.Raw)
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	return HistoryEntry{
		Domains:    slices.Clone(leaf.DNSNames),
		Serial:     hex.EncodeToString(leaf.SerialNumber.Bytes()),
		SHA256:     hex.EncodeToString(fp[:]),
		SPKISHA256: hex.EncodeToString(spki[:]),
		NotBefore:  leaf.NotBefore.UTC(),
		NotAfter:   leaf.NotAfter.UTC(),
	}
}

// MergeHistory returns the union of the entries, one per SHA256, ordered by
// NotBefore, then SHA256: the same set always encodes to the same bytes.
func MergeHistory(sets ...[]HistoryEntry) []HistoryEntry {
	byFP := map[string]HistoryEntry{}
	for _, s := range sets {
		for _, e := range s {
			if _, ok := byFP[e.SHA256]; !ok {
				byFP[e.SHA256] = e
			}
		}
	}
	out := make([]HistoryEntry, 0, len(byFP))
	for _, e := range byFP {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b HistoryEntry) int {
		if c := a.NotBefore.Compare(b.NotBefore); c != 0 {
			return c
		}
		return strings.Compare(a.SHA256, b.SHA256)
	})
	return out
}

// EncodeHistory writes history.json: {"certificates": [...]}, indented, with a final newline.
func EncodeHistory(entries []HistoryEntry) []byte {
	if entries == nil {
		entries = []HistoryEntry{}
	}
	b, err := json.MarshalIndent(history{Certificates: entries}, "", "  ")
	if err != nil {
		// Only strings and times inside: cannot fail.
		panic("evidence: encoding history: " + err.Error())
	}
	return append(b, '\n')
}

// ParseHistory reads history.json and checks each entry's shape.
func ParseHistory(b []byte) ([]HistoryEntry, error) {
	var h history
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("parsing history.json: want {\"certificates\": [{domains, serial, sha256, spki_sha256, not_before, not_after}]}: %w", err)
	}
	if dec.More() {
		return nil, errors.New("parsing history.json: trailing data after the JSON object")
	}
	if len(h.Certificates) > maxHistoryEntries {
		return nil, fmt.Errorf("parsing history.json: %d entries, at most %d accepted", len(h.Certificates), maxHistoryEntries)
	}
	for i, e := range h.Certificates {
		for _, f := range []struct{ name, v string }{{"sha256", e.SHA256}, {"spki_sha256", e.SPKISHA256}} {
			if d, err := hex.DecodeString(f.v); err != nil || len(d) != 32 || strings.ToLower(f.v) != f.v {
				return nil, fmt.Errorf("parsing history.json: entry %d: %s must be 64 lowercase hex characters", i, f.name)
			}
		}
		if _, err := hex.DecodeString(e.Serial); err != nil || e.Serial == "" {
			return nil, fmt.Errorf("parsing history.json: entry %d: serial must be hex", i)
		}
	}
	return h.Certificates, nil
}
