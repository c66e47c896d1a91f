package acme

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
