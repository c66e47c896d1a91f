package agent

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"math/big"
	"sync"
)

// KMSAccountKeyPath is the GetKey path of the ACME account key seed. Changing
// it changes every deployment's ACME account, and with it the CAA records
// that pin it.
const KMSAccountKeyPath = "tee-ingress/acme-account/v1"

// HKDF parameters of DeriveP256. They are part of the account key's
// definition: changing either changes every derived key.
const (
	deriveP256Salt = "tee-ingress/derive-p256/v1"
	deriveP256Info = "ACME account key, ECDSA P-256 private scalar"
)

// KMSKeySource is the ACME account key source for ACME_ACCOUNT_KEY=kms: the
// key is derived from the 32 bytes the dstack KMS gives this app for
// KMSAccountKeyPath, so every instance of the app, on any machine and after
// any loss of its volumes, has the same ACME account. It satisfies the acme
// package's KeySource.
type KMSKeySource struct {
	agent *Agent

	mu  sync.Mutex
	key *ecdsa.PrivateKey
}

// NewKMSKeySource returns a key source asking a for the seed.
func NewKMSKeySource(a *Agent) *KMSKeySource {
	return &KMSKeySource{agent: a}
}

// AccountKey returns the account key, an *ecdsa.PrivateKey on P-256. The
// first success is kept: the key cannot change, and later calls then need
// no agent.
func (k *KMSKeySource) AccountKey(ctx context.Context) (crypto.Signer, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.key != nil {
		return k.key, nil
	}
	seed, err := k.agent.GetKey(ctx, KMSAccountKeyPath)
	if err != nil {
		return nil, fmt.Errorf("deriving the ACME account key from the KMS: %w", err)
	}
	key, err := DeriveP256(seed)
	if err != nil {
		return nil, fmt.Errorf("deriving the ACME account key from the KMS: %w", err)
	}
	k.key = key
	return key, nil
}

// DeriveP256 derives a P-256 key from seed (at least 32 bytes):
// HKDF-SHA256(seed, salt "tee-ingress/derive-p256/v1", info "ACME account
// key, ECDSA P-256 private scalar") expanded to 40 bytes, read as a
// big-endian integer, reduced modulo n-1 and incremented, which gives a
// scalar in [1, n-1] with negligible bias (FIPS 186-5 A.2.1).
func DeriveP256(seed []byte) (*ecdsa.PrivateKey, error) {
	if len(seed) < 32 {
		return nil, fmt.Errorf("deriving a P-256 key: seed has %d bytes, want at least 32", len(seed))
	}
	okm, err := hkdf.Key(sha256.New, seed, []byte(deriveP256Salt), deriveP256Info, 40)
	if err != nil {
		return nil, fmt.Errorf("deriving a P-256 key: %w", err)
	}
	n := elliptic.P256().Params().N
	d := new(big.Int).SetBytes(okm)
	d.Mod(d, new(big.Int).Sub(n, big.NewInt(1)))
	d.Add(d, big.NewInt(1))
	key, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d.FillBytes(make([]byte, 32)))
	if err != nil {
		return nil, fmt.Errorf("deriving a P-256 key: %w", err)
	}
	return key, nil
}
