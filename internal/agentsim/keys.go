package agentsim

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"math/big"
)

// kdfSalt separates the simulator's derivations from any other use of the
// same seed.
const kdfSalt = "tee-ingress/agentsim/v1"

// defaultKMSSecret stands in for a KMS root when Config.KMSSecret is zero. It
// is public on purpose: every simulator then hands an app the same GetKey
// output, as one KMS does for every instance of an app, and nobody can
// mistake it for a secret.
var defaultKMSSecret = []byte("tee-ingress dstack simulator KMS root - public, not a secret")

// derive returns n bytes bound to (seed, label).
func derive(seed []byte, label string, n int) []byte {
	b, err := hkdf.Key(sha256.New, seed, []byte(kdfSalt), label, n)
	if err != nil {
		// Only possible for n > 255*32, which no caller asks for.
		panic(fmt.Sprintf("agentsim: hkdf: %v", err))
	}
	return b
}

// deriveP256 turns (seed, label) into a P-256 key: 40 bytes of HKDF output
// reduced modulo n-1, plus one (FIPS 186-5 A.2.1), so the scalar is valid and
// the bias negligible. Go's ecdsa.GenerateKey ignores a custom reader from
// Go 1.26 on, so deterministic keys have to be built by hand.
func deriveP256(seed []byte, label string) (*ecdsa.PrivateKey, error) {
	n := elliptic.P256().Params().N
	k := new(big.Int).SetBytes(derive(seed, label, 40))
	k.Mod(k, new(big.Int).Sub(n, big.NewInt(1)))
	k.Add(k, big.NewInt(1))
	key, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), k.FillBytes(make([]byte, 32)))
	if err != nil {
		return nil, fmt.Errorf("deriving P-256 key %q: %w", label, err)
	}
	return key, nil
}

// appKey is GetKey's answer: HMAC-SHA256 under the KMS secret of the app ID
// and the path, like a KMS that derives per-app keys. app IDs have a fixed
// length, so the concatenation is unambiguous.
func appKey(kmsSecret, appID []byte, path string) []byte {
	m := hmac.New(sha256.New, kmsSecret)
	m.Write([]byte("get-key/v1\x00"))
	m.Write(appID)
	m.Write([]byte(path))
	return m.Sum(nil)
}

// placeholderSignature stands in for the agent's 65-byte secp256k1
// recoverable signatures in GetKey's signature_chain. It has the real length
// and is deterministic, but it is not a signature: the standard library has no
// secp256k1 and nothing in tee-ingress checks the chain.
func placeholderSignature(kmsSecret []byte, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, kmsSecret)
	for _, p := range parts {
		m.Write(p)
		m.Write([]byte{0})
	}
	a := m.Sum(nil)
	m.Write([]byte{1})
	b := m.Sum(nil)
	return append(append(a, b...), 0)
}
