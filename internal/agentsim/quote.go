package agentsim

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
)

// TDX quote v4 layout (Intel TDX DCAP Quote Generation Library and Quote
// Verification Library API, appendix A.3), offsets from the quote's start.
const (
	headerLen     = 0x30
	bodyLen       = 0x248
	mrTDOff       = headerLen + 0x88  // 184
	mrConfigIDOff = headerLen + 0xb8  // 232
	rtmrOff       = headerLen + 0x148 // 376
	reportDataOff = headerLen + 0x208 // 568
	qeReportLen   = 0x180
)

// Fixed parts of the simulated platform. They look like a real dstack CVM's
// (same TCB SVNs, TD attributes without debug, XFAM), but MRSEAM and the QE's
// MRENCLAVE/MRSIGNER are hashes of simulator labels, so a verifier that
// compares them against Intel's published values rejects them too.
var (
	quoteHeaderPrefix = []byte{0x04, 0x00, 0x02, 0x00, 0x81, 0x00, 0x00, 0x00}
	// intelQEVendorID identifies Intel's quoting enclave in every v4 quote.
	intelQEVendorID = []byte{0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07}
	teeTCBSVN       = []byte{0x0c, 0x01, 0x04, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	tdAttributes    = []byte{0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00} // SEPT_VE_DISABLE; bit 0 (debug) clear
	xfam            = []byte{0xe7, 0x02, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00}
	qeCPUSVN        = []byte{0x04, 0x04, 0x19, 0x1b, 0x04, 0xff, 0x00, 0x06, 0, 0, 0, 0, 0, 0, 0, 0}
	qeAttributes    = []byte{0x15, 0, 0, 0, 0, 0, 0, 0, 0xe7, 0, 0, 0, 0, 0, 0, 0}
)

func labelHash384(label string) []byte {
	sum := sha512.Sum384([]byte("dstack-simulator " + label))
	return sum[:]
}

func labelHash256(label string) []byte {
	sum := sha256.Sum256([]byte("dstack-simulator " + label))
	return sum[:]
}

// mrTD is the simulated TD's build-time measurement: one value for every
// simulator, like one OS image.
func mrTD() []byte { return labelHash384("mrtd") }

// qeSection is the part of a quote after the attestation key that does not
// depend on the TD: certification data type 6, holding the QE report (whose
// report_data binds the attestation key), its signature by the PCK key, the
// QE authentication data and the PCK chain (type 5). Like a real QE's, it is
// made once per attestation key.
func (p *pki) qeSection() ([]byte, error) {
	attestPub, err := p.attestPub()
	if err != nil {
		return nil, err
	}
	authData := make([]byte, 32)
	for i := range authData {
		authData[i] = byte(i)
	}

	report := make([]byte, qeReportLen)
	copy(report[0x00:], qeCPUSVN)
	copy(report[0x30:], qeAttributes)
	copy(report[0x40:], labelHash256("qe mrenclave"))
	copy(report[0x80:], labelHash256("qe mrsigner"))
	binary.LittleEndian.PutUint16(report[0x100:], 2) // ISVPRODID of the TDX QE
	binary.LittleEndian.PutUint16(report[0x102:], 8) // ISVSVN
	bind := sha256.Sum256(append(append([]byte{}, attestPub...), authData...))
	copy(report[0x140:], bind[:]) // second half stays zero
	reportSig, err := signRaw(p.pckKey, report)
	if err != nil {
		return nil, fmt.Errorf("signing the QE report: %w", err)
	}

	var qe []byte
	qe = append(qe, report...)
	qe = append(qe, reportSig...)
	qe = binary.LittleEndian.AppendUint16(qe, uint16(len(authData)))
	qe = append(qe, authData...)
	qe = binary.LittleEndian.AppendUint16(qe, 5)
	qe = binary.LittleEndian.AppendUint32(qe, uint32(len(p.chainPEM)))
	qe = append(qe, p.chainPEM...)

	var cert []byte
	cert = binary.LittleEndian.AppendUint16(cert, 6)
	cert = binary.LittleEndian.AppendUint32(cert, uint32(len(qe)))
	return append(cert, qe...), nil
}

// attestPub is the attestation key as quotes carry it: X || Y, 64 bytes.
func (p *pki) attestPub() ([]byte, error) {
	b, err := p.attestKey.PublicKey.Bytes()
	if err != nil {
		return nil, fmt.Errorf("encoding the attestation key: %w", err)
	}
	return b[1:], nil
}

// tdInputs is what a quote's TD report body says about the TD.
type tdInputs struct {
	userData   []byte // header user data, 20 bytes (QE identity)
	mrConfigID []byte // 48 bytes
	rtmrs      [4][48]byte
	reportData [64]byte
	debug      bool // TD_ATTRIBUTES bit 0
}

// buildQuote assembles and signs a TDX v4 quote: header and TD report body
// signed with the attestation key (ECDSA P-256, SHA-256, r || s), followed by
// the attestation key and qeSection.
func (p *pki) buildQuote(in tdInputs, qeSection []byte) ([]byte, error) {
	attestPub, err := p.attestPub()
	if err != nil {
		return nil, err
	}
	q := make([]byte, headerLen+bodyLen, headerLen+bodyLen+4+128+len(qeSection))
	copy(q, quoteHeaderPrefix)
	copy(q[0x0c:], intelQEVendorID)
	copy(q[0x1c:], in.userData)

	copy(q[headerLen+0x00:], teeTCBSVN)
	copy(q[headerLen+0x10:], labelHash384("mrseam"))
	copy(q[headerLen+0x78:], tdAttributes)
	if in.debug {
		q[headerLen+0x78] |= 1
	}
	copy(q[headerLen+0x80:], xfam)
	copy(q[mrTDOff:], mrTD())
	copy(q[mrConfigIDOff:], in.mrConfigID)
	for i, r := range in.rtmrs {
		copy(q[rtmrOff+48*i:], r[:])
	}
	copy(q[reportDataOff:], in.reportData[:])

	sig, err := signRaw(p.attestKey, q)
	if err != nil {
		return nil, fmt.Errorf("signing the quote: %w", err)
	}
	q = binary.LittleEndian.AppendUint32(q, uint32(len(sig)+len(attestPub)+len(qeSection)))
	q = append(q, sig...)
	q = append(q, attestPub...)
	return append(q, qeSection...), nil
}

// signRaw signs SHA-256(msg) and returns r || s, 32 bytes each, the encoding
// of signatures inside quotes.
func signRaw(key *ecdsa.PrivateKey, msg []byte) ([]byte, error) {
	sum := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		return nil, err
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	s.FillBytes(out[32:])
	return out, nil
}
