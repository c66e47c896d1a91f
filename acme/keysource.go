package acme

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tee-ingress/tee-ingress/internal/atomicfile"
)

// KeySource yields the ACME account key. The dstack KMS source
// (agent.KMSKeySource) derives it from the app's KMS key so that every
// instance of the app, and every redeploy, has the same account.
type KeySource interface {
	AccountKey(ctx context.Context) (crypto.Signer, error)
}

// FileKeySource keeps a P-256 account key in a PEM file, creating it (mode
// 0600) on first use.
type FileKeySource struct {
	// Path of the PEM file. Required.
	Path string
}

var _ KeySource = (*FileKeySource)(nil)

// AccountKey loads the key at Path, or generates and stores one if the file
// does not exist.
func (f *FileKeySource) AccountKey(ctx context.Context) (crypto.Signer, error) {
	if f.Path == "" {
		return nil, errors.New("file key source: no path set")
	}
	data, err := os.ReadFile(f.Path)
	switch {
	case err == nil:
		return parseECKey(data, f.Path)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("reading account key %s: %w", f.Path, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating account key: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding account key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(f.Path), 0o700); err != nil {
		return nil, fmt.Errorf("creating directory for account key: %w", err)
	}
	if err := atomicfile.WriteFile(f.Path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, fmt.Errorf("storing account key: %w", err)
	}
	return key, nil
}

func parseECKey(data []byte, name string) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("account key %s: no PEM block (want an EC PRIVATE KEY or PRIVATE KEY block)", name)
	}
	var key any
	var err error
	switch block.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("account key %s: PEM block %q (want EC PRIVATE KEY or PRIVATE KEY)", name, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("account key %s: %w", name, err)
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("account key %s: not a P-256 ECDSA key (only P-256 is accepted)", name)
	}
	return ec, nil
}
