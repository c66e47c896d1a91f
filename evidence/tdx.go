package evidence

import (
	"bytes"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"

	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"
)

// intelRootPEM is Intel's SGX Root CA, the root of every genuine TDX quote's
// PCK chain. Copied from github.com/google/go-tdx-guest v0.3.1
// verify/trusted_root.pem (the module does not export it); also published by
// Intel at https://certificates.trustedservices.intel.com/Intel_SGX_Provisioning_Certification_RootCA.pem.
// SHA-256 fingerprint 44:A0:19:6B:2B:99:F8:89:B8:E1:49:E9:5B:80:7A:35:0E:74:24:96:43:99:E8:85:A7:CB:B8:CC:FA:B6:74:D3.
//
//go:embed intel_sgx_root_ca.pem
var intelRootPEM []byte

var intelRoot = sync.OnceValue(func() *x509.Certificate {
	b, _ := pem.Decode(intelRootPEM)
	if b == nil {
		panic("evidence: embedded Intel SGX root is not PEM")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		panic("evidence: embedded Intel SGX root: " + err.Error())
	}
	return c
})

// IntelRootCA returns Intel's SGX Root CA certificate, the default trust
// anchor for quotes. The certificate is shared: do not modify it.
func IntelRootCA() *x509.Certificate { return intelRoot() }

// MaxQuoteJSONBytes bounds quote.json: a real one is about 20 KB.
const MaxQuoteJSONBytes = 1 << 20

// quoteJSON is the wire form of a GetQuote response (quote.json).
type quoteJSON struct {
	Quote      *string `json:"quote"`
	EventLog   *string `json:"event_log"`
	ReportData *string `json:"report_data"`
	VMConfig   *string `json:"vm_config"`
}

// ParseQuoteJSON decodes a GetQuote response (quote.json): "quote" (hex,
// required), "event_log" (a JSON array encoded as a string, required),
// "report_data" (hex, optional: the legacy tappd API omits it) and
// "vm_config" (optional). Other fields are ignored. Raw keeps b. The event
// log's content and the quote's layout are checked by ParseEventLog and
// ParseTDQuote.
func ParseQuoteJSON(b []byte) (*Quote, error) {
	if len(b) > MaxQuoteJSONBytes {
		return nil, fmt.Errorf("parsing quote.json: %d bytes, at most %d accepted", len(b), MaxQuoteJSONBytes)
	}
	var w quoteJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("parsing quote.json: want a JSON object {quote, event_log, report_data, vm_config}: %w", err)
	}
	if dec.More() {
		return nil, errors.New("parsing quote.json: trailing data after the JSON object")
	}
	if w.Quote == nil {
		return nil, errors.New(`parsing quote.json: field "quote" missing (is this an error response of the guest agent?)`)
	}
	if w.EventLog == nil {
		return nil, errors.New(`parsing quote.json: field "event_log" missing`)
	}
	q := &Quote{Raw: b, EventLog: *w.EventLog}
	var err error
	if q.Quote, err = hex.DecodeString(*w.Quote); err != nil {
		return nil, fmt.Errorf(`parsing quote.json: field "quote" is not hex: %w`, err)
	}
	if len(q.Quote) == 0 {
		return nil, errors.New(`parsing quote.json: field "quote" is empty`)
	}
	if w.ReportData != nil {
		if q.ReportData, err = hex.DecodeString(*w.ReportData); err != nil {
			return nil, fmt.Errorf(`parsing quote.json: field "report_data" is not hex: %w`, err)
		}
		if len(q.ReportData) != 64 {
			return nil, fmt.Errorf(`parsing quote.json: field "report_data" has %d bytes, want 64`, len(q.ReportData))
		}
	}
	if w.VMConfig != nil {
		q.VMConfig = *w.VMConfig
	}
	return q, nil
}

// TDQuote is the part of a TDX v4 quote that verification compares.
type TDQuote struct {
	// Proto is the parsed quote for go-tdx-guest.
	Proto        *pb.QuoteV4
	MRTD         [48]byte
	RTMRs        [4][48]byte
	ReportData   [64]byte
	TDAttributes [8]byte
}

// quoteToProto is abi.QuoteToProto for untrusted bytes. go-tdx-guest v0.3.1
// slices by length fields it has not checked (the QE authentication data's
// size, found by FuzzParseAgentQuote), so a malformed quote can panic it;
// that becomes an error here, as any other malformed quote does.
func quoteToProto(raw []byte) (p any, err error) {
	defer func() {
		if r := recover(); r != nil {
			p, err = nil, fmt.Errorf("malformed quote: a length field points past its %d bytes (go-tdx-guest: %v)", len(raw), r)
		}
	}()
	return abi.QuoteToProto(raw)
}

// ParseTDQuote parses a raw TDX quote. Only version 4 quotes of a TDX TEE
// (header 04 00 02 00 81 00 00 00) are accepted. It checks layout, not signatures.
func ParseTDQuote(raw []byte) (*TDQuote, error) {
	if len(raw) < 8 {
		return nil, fmt.Errorf("parsing TDX quote: %d bytes, too short for a header", len(raw))
	}
	if raw[0] != 4 || raw[1] != 0 {
		return nil, fmt.Errorf("parsing TDX quote: version %d, only version 4 accepted", int(raw[0])|int(raw[1])<<8)
	}
	p, err := quoteToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("parsing TDX quote: %w", err)
	}
	q4, ok := p.(*pb.QuoteV4)
	if !ok {
		return nil, fmt.Errorf("parsing TDX quote: unsupported quote type %T, want version 4", p)
	}
	if tee := q4.GetHeader().GetTeeType(); tee != abi.TeeTDX {
		return nil, fmt.Errorf("parsing TDX quote: tee type %#x, want %#x (TDX)", tee, abi.TeeTDX)
	}
	body := q4.GetTdQuoteBody()
	t := &TDQuote{Proto: q4}
	if len(body.GetRtmrs()) != 4 {
		return nil, fmt.Errorf("parsing TDX quote: %d RTMRs, want 4", len(body.GetRtmrs()))
	}
	for i, r := range body.GetRtmrs() {
		copy(t.RTMRs[i][:], r)
	}
	copy(t.MRTD[:], body.GetMrTd())
	copy(t.ReportData[:], body.GetReportData())
	copy(t.TDAttributes[:], body.GetTdAttributes())
	return t, nil
}

// Debug reports whether the TD runs in debug mode (TD_ATTRIBUTES bit 0): its
// memory is readable by the host, so it proves nothing.
func (q *TDQuote) Debug() bool { return q.TDAttributes[0]&1 != 0 }
