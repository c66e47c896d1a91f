package agentsim

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"
)

// The certificate names go-tdx-guest checks (verify.validateCertificate), and
// the organization that tells a human reading the chain what it really is.
const (
	rootCN         = "Intel SGX Root CA"
	intermediateCN = "Intel SGX PCK Platform CA"
	pckCN          = "Intel SGX PCK Certificate"
	simOrg         = "dstack simulator - NOT Intel, NOT a TEE"
	// simCRL is where Intel's chain names its CRL; .invalid never resolves.
	simCRL = "https://dstack-simulator.invalid/sgx/certification/v4/pckcrl?ca=platform&encoding=der"
)

// Fixed validity, so certificates made from one seed on different days agree
// on everything but their signatures.
var (
	certNotBefore = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	certNotAfter  = time.Date(2050, 1, 1, 0, 0, 0, 0, time.UTC)
)

// OIDs of Intel's SGX PCK certificate extension (Intel SGX PCK Certificate
// and CRL Profile, section 1.3.5).
var (
	oidSGX            = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1}
	oidPPID           = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 1}
	oidTCB            = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 2}
	oidPCEID          = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 3}
	oidFMSPC          = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 4}
	oidSGXType        = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 5}
	oidPlatformInstID = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 6}
	oidConfiguration  = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 7}
)

// pki is the simulated Intel side: the CA chain, the PCK key that signs the
// QE report, and the QE's attestation key that signs quotes.
type pki struct {
	root, intermediate, pck *x509.Certificate
	pckKey, attestKey       *ecdsa.PrivateKey
	// chainPEM is the PCK leaf, the intermediate and the root, as a quote
	// carries them (certification data type 5).
	chainPEM []byte
}

func newPKI(seed []byte) (*pki, error) {
	rootKey, err := deriveP256(seed, "root-ca")
	if err != nil {
		return nil, err
	}
	interKey, err := deriveP256(seed, "pck-platform-ca")
	if err != nil {
		return nil, err
	}
	pckKey, err := deriveP256(seed, "pck")
	if err != nil {
		return nil, err
	}
	attestKey, err := deriveP256(seed, "qe-attestation-key")
	if err != nil {
		return nil, err
	}

	rootTmpl := caTemplate(seed, rootCN, 1, &rootKey.PublicKey)
	root, err := createCert(rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, fmt.Errorf("creating simulator root CA: %w", err)
	}
	interTmpl := caTemplate(seed, intermediateCN, 0, &interKey.PublicKey)
	inter, err := createCert(interTmpl, root, &interKey.PublicKey, rootKey)
	if err != nil {
		return nil, fmt.Errorf("creating simulator PCK platform CA: %w", err)
	}
	sgxExt, err := sgxExtension(seed)
	if err != nil {
		return nil, err
	}
	// Exactly six extensions, like Intel's PCK certificates (go-tdx-guest
	// insists): authority and subject key IDs, CRL distribution point, key
	// usage, basic constraints, and the SGX extension.
	pckTmpl := &x509.Certificate{
		SerialNumber:          serial(seed, "pck-serial"),
		Subject:               pkix.Name{CommonName: pckCN, Organization: []string{simOrg}},
		NotBefore:             certNotBefore,
		NotAfter:              certNotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		BasicConstraintsValid: true,
		SubjectKeyId:          keyID(&pckKey.PublicKey),
		CRLDistributionPoints: []string{simCRL},
		ExtraExtensions:       []pkix.Extension{sgxExt},
	}
	pck, err := createCert(pckTmpl, inter, &pckKey.PublicKey, interKey)
	if err != nil {
		return nil, fmt.Errorf("creating simulator PCK certificate: %w", err)
	}
	var chain []byte
	for _, c := range []*x509.Certificate{pck, inter, root} {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	// Real quotes end the chain with a NUL, which go-tdx-guest tolerates.
	chain = append(chain, 0)
	return &pki{root: root, intermediate: inter, pck: pck, pckKey: pckKey, attestKey: attestKey, chainPEM: chain}, nil
}

func caTemplate(seed []byte, cn string, maxPathLen int, pub *ecdsa.PublicKey) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          serial(seed, cn),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{simOrg}},
		NotBefore:             certNotBefore,
		NotAfter:              certNotAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            maxPathLen,
		MaxPathLenZero:        maxPathLen == 0,
		SubjectKeyId:          keyID(pub),
	}
}

func createCert(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// serial is a positive 127-bit serial number bound to (seed, label).
func serial(seed []byte, label string) *big.Int {
	b := derive(seed, "serial/"+label, 16)
	b[0] &= 0x7f
	b[0] |= 0x40
	return new(big.Int).SetBytes(b)
}

// keyID is the RFC 5280 method 1 key identifier: SHA-1 of the public key bits.
func keyID(pub *ecdsa.PublicKey) []byte {
	b, err := pub.Bytes()
	if err != nil {
		panic(fmt.Sprintf("agentsim: encoding a P-256 public key: %v", err))
	}
	sum := sha1.Sum(b)
	return sum[:]
}

// sgxExtension builds the SGX extension with the members go-tdx-guest reads
// (PPID, TCB with 16 components, PCESVN and CPUSVN, PCE-ID, FMSPC) and the
// ones a platform CA's certificate also has (SGX type, platform instance ID,
// configuration).
func sgxExtension(seed []byte) (pkix.Extension, error) {
	type octets struct {
		ID asn1.ObjectIdentifier
		V  []byte
	}
	type integer struct {
		ID asn1.ObjectIdentifier
		V  int
	}
	type enumerated struct {
		ID asn1.ObjectIdentifier
		V  asn1.Enumerated
	}
	type boolean struct {
		ID asn1.ObjectIdentifier
		V  bool
	}
	type sequence struct {
		ID asn1.ObjectIdentifier
		V  []asn1.RawValue
	}
	raw := func(v any) (asn1.RawValue, error) {
		b, err := asn1.Marshal(v)
		if err != nil {
			return asn1.RawValue{}, err
		}
		return asn1.RawValue{FullBytes: b}, nil
	}
	var tcb []asn1.RawValue
	cpuSVN := []byte{0x04, 0x04, 0x19, 0x1b, 0x04, 0xff, 0x00, 0x06, 0, 0, 0, 0, 0, 0, 0, 0}
	for i := 1; i <= 16; i++ {
		id := append(append(asn1.ObjectIdentifier{}, oidTCB...), i)
		r, err := raw(integer{id, int(cpuSVN[i-1])})
		if err != nil {
			return pkix.Extension{}, err
		}
		tcb = append(tcb, r)
	}
	pceSVN, err := raw(integer{append(append(asn1.ObjectIdentifier{}, oidTCB...), 17), 13})
	if err != nil {
		return pkix.Extension{}, err
	}
	cpu, err := raw(octets{append(append(asn1.ObjectIdentifier{}, oidTCB...), 18), cpuSVN})
	if err != nil {
		return pkix.Extension{}, err
	}
	tcb = append(tcb, pceSVN, cpu)

	var config []asn1.RawValue
	for i, v := range []bool{false, true, true} {
		r, err := raw(boolean{append(append(asn1.ObjectIdentifier{}, oidConfiguration...), i+1), v})
		if err != nil {
			return pkix.Extension{}, err
		}
		config = append(config, r)
	}

	var members []asn1.RawValue
	for _, v := range []any{
		octets{oidPPID, derive(seed, "ppid", 16)},
		sequence{oidTCB, tcb},
		octets{oidPCEID, []byte{0, 0}},
		octets{oidFMSPC, []byte{0x00, 0x80, 0x6f, 0x05, 0x00, 0x00}},
		enumerated{oidSGXType, 1}, // platform
		octets{oidPlatformInstID, derive(seed, "platform-instance-id", 16)},
		sequence{oidConfiguration, config},
	} {
		r, err := raw(v)
		if err != nil {
			return pkix.Extension{}, fmt.Errorf("encoding the SGX extension: %w", err)
		}
		members = append(members, r)
	}
	value, err := asn1.Marshal(members)
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("encoding the SGX extension: %w", err)
	}
	return pkix.Extension{Id: oidSGX, Value: value}, nil
}
