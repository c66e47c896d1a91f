package acme

import (
	"fmt"
	"os"
	"path/filepath"
)

// writeFileAtomic writes data to a temporary file in the same directory,
// fsyncs it and renames it over path, so a crash leaves either the old or the
// new content, never a torn file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	defer os.Remove(name) // no-op after a successful rename
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(name, path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening %s to sync: %w", dir, err)
	}
	defer d.Close()
	return d.Sync()
}

// storedCert is what is kept per domain set: one file, mode 0600 because it
// holds the private key, written atomically so that the chain and its key
// can never disagree on disk.
type storedCert struct {
	Domains   []string `json:"domains"`
	Directory string   `json:"directory"`
	CertURL   string   `json:"cert_url,omitempty"`
	ChainPEM  string   `json:"chain_pem"`
	KeyPEM    string   `json:"key_pem"`
}

// setFileName is the file name for a domain set: its first name with the
// wildcard label spelled out, which keeps names unique (a set is keyed by its
// first name) and legal on every filesystem.
func setFileName(domains []string) string {
	name := domains[0]
	if len(name) > 2 && name[:2] == "*." {
		name = "_wildcard." + name[2:]
	}
	return name + ".json"
}
