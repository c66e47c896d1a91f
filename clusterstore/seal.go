package clusterstore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
)

// A sealed value is
//
//	"TIS1" | generation (8 bytes, big endian) | nonce (12) | AES-256-GCM ciphertext and tag
//
// with the additional data binding the header and the full etcd key, so a
// value copied under another key, or given another generation, fails to
// open. The generation is inside the authenticated part because the store
// is not trusted: only a holder of the app's key can mint a higher one.
const (
	magic      = "TIS1"
	headerLen  = len(magic) + 8
	nonceLen   = 12
	minSealed  = headerLen + nonceLen + 16
	aadContext = "tee-ingress cluster value v1\x00"
)

// KeySize is the length of the sealing key.
const KeySize = 32

type sealer struct{ aead cipher.AEAD }

func newSealer(key []byte) (*sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("clusterstore: sealing key is %d bytes, need %d (derive it from the dstack KMS)", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead}, nil
}

func aad(etcdKey string, header []byte) []byte {
	b := make([]byte, 0, len(aadContext)+len(etcdKey)+1+len(header))
	b = append(b, aadContext...)
	b = append(b, etcdKey...)
	b = append(b, 0)
	return append(b, header...)
}

func (s *sealer) seal(etcdKey string, gen uint64, plain []byte) []byte {
	out := make([]byte, headerLen+nonceLen, headerLen+nonceLen+len(plain)+s.aead.Overhead())
	copy(out, magic)
	binary.BigEndian.PutUint64(out[len(magic):headerLen], gen)
	if _, err := rand.Read(out[headerLen:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return s.aead.Seal(out, out[headerLen:], plain, aad(etcdKey, out[:headerLen]))
}

var (
	errFormat = errors.New("not a sealed tee-ingress value")
	errOpen   = errors.New("does not open under this app's key at this key name (changed, moved, or sealed by another app)")
)

// open authenticates and decrypts a sealed value stored at etcdKey.
func (s *sealer) open(etcdKey string, sealed []byte) (gen uint64, plain []byte, err error) {
	if len(sealed) < minSealed || string(sealed[:len(magic)]) != magic {
		return 0, nil, errFormat
	}
	gen = binary.BigEndian.Uint64(sealed[len(magic):headerLen])
	plain, err = s.aead.Open(nil, sealed[headerLen:headerLen+nonceLen], sealed[headerLen+nonceLen:], aad(etcdKey, sealed[:headerLen]))
	if err != nil {
		return 0, nil, errOpen
	}
	return gen, plain, nil
}
