package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"math/big"
	"time"

	"github.com/tee-ingress/tee-ingress/evidence"
)

// selfSignedName is the certificate's name when no domain is configured:
// clients of the self-signed mode pin the certificate (through
// /attestation), they do not check names.
const selfSignedName = "tee-ingress.invalid"

// selfSignedLifetime: the certificate lives as long as the process (a new key
// at every start), and the attestation, not a CA, vouches for it.
const selfSignedLifetime = 397 * 24 * time.Hour

// newSelfSigned generates a P-256 key and a self-signed certificate for names
// (selfSignedName when there are none), inside the TEE: the key never leaves
// this process.
func newSelfSigned(names []string, now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the self-signed key: %w", err)
	}
	return selfSignedCert(key, names, now, nil)
}

// selfSignedCert makes the self-signed certificate of key, with extra
// extensions (RA-TLS evidence).
func selfSignedCert(key *ecdsa.PrivateKey, names []string, now time.Time, exts []pkix.Extension) (*tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generating a serial number: %w", err)
	}
	if len(names) == 0 {
		names = []string{selfSignedName}
	}
	tmpl := &x509.Certificate{
		SerialNumber:    serial,
		Subject:         pkix.Name{CommonName: names[0], Organization: []string{"tee-ingress attested self-signed"}},
		DNSNames:        names,
		NotBefore:       now.Add(-time.Hour),
		NotAfter:        now.Add(selfSignedLifetime),
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		ExtraExtensions: exts,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("creating the self-signed certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// raTLSCert remakes the self-signed certificate in dstack's RA-TLS form:
// the same key, and a quote over SHA-512("ratls-cert:" || its public key)
// in the certificate, as a dstack attestation (OID 1.3.6.1.4.1.62397.1.8).
// It is built here rather than asked of the agent's GetTlsKey: the key is
// made and kept by this process, like the plain form's, and the
// certificate stays self-signed, so pinning it means the same in both forms.
func raTLSCert(ctx context.Context, q evidence.Quoter, cur *tls.Certificate, now time.Time) (*tls.Certificate, error) {
	key, ok := cur.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("RA-TLS: the self-signed key is a %T, not ECDSA", cur.PrivateKey)
	}
	quote, err := q.Quote(ctx, evidence.RATLSReportData(cur.Leaf.RawSubjectPublicKeyInfo))
	if err != nil {
		return nil, fmt.Errorf("RA-TLS: quoting the certificate's key: %w", err)
	}
	att, err := evidence.EncodeDstackAttestation(quote)
	if err != nil {
		return nil, fmt.Errorf("RA-TLS: %w", err)
	}
	ext, err := evidence.RATLSExtension(att)
	if err != nil {
		return nil, fmt.Errorf("RA-TLS: %w", err)
	}
	return selfSignedCert(key, cur.Leaf.DNSNames, now, []pkix.Extension{ext})
}

// fingerprint is what /attestation binds: SHA-256 of the leaf's DER.
func fingerprint(der []byte) [32]byte { return sha256.Sum256(der) }

// identifySelfSigned finds the guest agent and serves /attestation on it.
func (d *daemon) identifySelfSigned(ctx context.Context) error {
	a, err := d.findAgent()
	if err != nil {
		return err
	}
	if !a.Legacy() {
		info, err := a.Info(ctx)
		if err != nil {
			return err
		}
		d.log.Info("app identity", "app_id", fmt.Sprintf("%x", info.AppID), "instance_id", fmt.Sprintf("%x", info.InstanceID),
			"compose_hash", fmt.Sprintf("%x", info.ComposeHash), "agent", a.Endpoint())
	}
	d.warnSimulator(a)
	if d.cfg.RATLS {
		cert, err := raTLSCert(ctx, a, d.selfSigned, time.Now())
		if err != nil {
			return err
		}
		if err := d.store.Set(cert.Leaf.DNSNames[0], map[string]*tls.Certificate{cert.Leaf.DNSNames[0]: cert}); err != nil {
			return err
		}
		d.mu.Lock()
		d.selfSigned = cert
		d.mu.Unlock()
		fp := fingerprint(cert.Leaf.Raw)
		d.log.Info("serving the RA-TLS certificate: the attestation is in it", "sha256", hex.EncodeToString(fp[:]))
	}
	h, err := evidence.NewAttestationHandler(evidence.AttestationConfig{Quoter: a, CertDER: d.selfSigned.Leaf.Raw, Logger: d.log.With("component", "attestation")})
	if err != nil {
		return err
	}
	d.attestation.set(h)
	d.changed()
	return nil
}

// probeAgent asks the guest agent for Info when the daemon cannot do its
// job without it: in self-signed mode every /attestation is a quote, so an
// agent that stopped answering makes the instance unready, not a ready
// instance that answers 502. Other modes serve on without it.
func (d *daemon) probeAgent(ctx context.Context) error {
	if d.cfg.CertSource != sourceSelfSigned {
		return nil
	}
	d.mu.Lock()
	a := d.agent
	d.mu.Unlock()
	if a == nil {
		return nil // readiness says so already
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := a.Info(ctx); err != nil {
		return fmt.Errorf("the dstack guest agent at %s does not answer, so /attestation cannot be served: %w", a.Endpoint(), err)
	}
	return nil
}
