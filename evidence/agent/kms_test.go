package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tee-ingress/tee-ingress/internal/agentsim"
)

// accountKeySource restates the acme package's KeySource, which evidence
// cannot import.
type accountKeySource interface {
	AccountKey(ctx context.Context) (crypto.Signer, error)
}

var _ accountKeySource = (*KMSKeySource)(nil)

func kmsTestScalar(t *testing.T, k *ecdsa.PrivateKey) string {
	t.Helper()
	b, err := k.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func TestDeriveP256(t *testing.T) {
	seed := make([]byte, 32)
	for i := range seed {
		seed[i] = byte(i)
	}
	k1, err := DeriveP256(seed)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := DeriveP256(bytes.Clone(seed))
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Equal(k2) {
		t.Error("same seed, different keys")
	}
	// Pinned (and cross-checked with Python's hmac/hashlib HKDF): the
	// account key of every deployment depends on it.
	const want = "31f3da5e1df7033cfd8c5b18be749c86b54dabcd938c25868b5ad3fc6faed547"
	if got := kmsTestScalar(t, k1); got != want {
		t.Errorf("DeriveP256(00..1f) = %s, want %s", got, want)
	}
	seed2 := bytes.Clone(seed)
	seed2[31] ^= 1
	k3, err := DeriveP256(seed2)
	if err != nil {
		t.Fatal(err)
	}
	if k1.Equal(k3) {
		t.Error("different seeds, same key")
	}
	if k1.Curve != elliptic.P256() {
		t.Errorf("curve %v, want P-256", k1.Curve.Params().Name)
	}
	pub, err := k1.PublicKey.Bytes()
	if err != nil {
		t.Fatalf("public key is not a valid P-256 point: %v", err)
	}
	if _, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), pub); err != nil {
		t.Errorf("public key does not parse back: %v", err)
	}
	digest := sha256.Sum256([]byte("jws payload"))
	sig, err := k1.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(&k1.PublicKey, digest[:], sig) {
		t.Error("signature does not verify")
	}
	if ecdsa.VerifyASN1(&k3.PublicKey, digest[:], sig) {
		t.Error("signature verifies under another key")
	}

	for _, n := range []int{0, 16, 31} {
		if _, err := DeriveP256(make([]byte, n)); err == nil || !strings.Contains(err.Error(), "want at least 32") {
			t.Errorf("DeriveP256 of %d bytes: err = %v", n, err)
		}
	}
	if _, err := DeriveP256(make([]byte, 64)); err != nil {
		t.Errorf("DeriveP256 of 64 bytes: %v", err)
	}
}

func kmsTestAgent(t *testing.T, cfg agentsim.Config) (*agentsim.Simulator, *Agent) {
	t.Helper()
	s := agentTestSim(t, cfg)
	sock := filepath.Join(agentTestDir(t), "dstack.sock")
	if err := s.Serve(sock); err != nil {
		t.Fatal(err)
	}
	a, err := New(Options{Endpoint: sock})
	if err != nil {
		t.Fatal(err)
	}
	return s, a
}

func TestKMSKeySourceThroughSimulator(t *testing.T) {
	appID := bytes.Repeat([]byte{0x42}, 20)
	// Two instances of one app on different machines: different seeds, so
	// different instance IDs and attestation keys, same app ID.
	s1, a1 := kmsTestAgent(t, agentsim.Config{AppID: appID, Seed: []byte("machine one seed, long enough..")})
	_, a2 := kmsTestAgent(t, agentsim.Config{AppID: appID, Seed: []byte("machine two seed, long enough..")})
	_, a3 := kmsTestAgent(t, agentsim.Config{AppID: bytes.Repeat([]byte{0x43}, 20)})
	ctx := context.Background()

	key := func(a *Agent) *ecdsa.PrivateKey {
		t.Helper()
		signer, err := NewKMSKeySource(a).AccountKey(ctx)
		if err != nil {
			t.Fatalf("AccountKey: %v", err)
		}
		k, ok := signer.(*ecdsa.PrivateKey)
		if !ok || k.Curve != elliptic.P256() {
			t.Fatalf("AccountKey returned %T, want a P-256 *ecdsa.PrivateKey", signer)
		}
		return k
	}
	k1, k2, k3 := key(a1), key(a2), key(a3)
	if !k1.Equal(k2) {
		t.Error("two instances of one app derived different account keys")
	}
	if k1.Equal(k3) {
		t.Error("two apps derived the same account key")
	}
	seed, err := a1.GetKey(ctx, KMSAccountKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	want, err := DeriveP256(seed)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Equal(want) {
		t.Error("AccountKey is not DeriveP256 of GetKey(KMSAccountKeyPath)")
	}

	// The key is kept after the first success: the agent is not needed again.
	src := NewKMSKeySource(a1)
	first, err := src.AccountKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := src.AccountKey(ctx)
	if err != nil || again != first {
		t.Errorf("second AccountKey after the agent went away: %v", err)
	}
	// A fresh source without an agent fails with the cause.
	if _, err := NewKMSKeySource(a1).AccountKey(ctx); err == nil || !strings.Contains(err.Error(), "deriving the ACME account key from the KMS") {
		t.Errorf("AccountKey without an agent: err = %v", err)
	}
}
