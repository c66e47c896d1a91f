package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// CertSource chooses the certificate for a TLS handshake. It has the signature
// of tls.Config.GetCertificate so that any function of that shape (or a
// certmagic/autocert-style manager) can be used; CertStore is the implementation
// the daemon uses.
type CertSource interface {
	GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error)
}

// ChallengeSource answers tls-alpn-01 (RFC 8737): it returns the challenge
// certificate for a name with a pending challenge.
type ChallengeSource interface {
	ChallengeCertificate(serverName string) (*tls.Certificate, bool)
}

// CertFunc adapts a function to CertSource.
type CertFunc func(hello *tls.ClientHelloInfo) (*tls.Certificate, error)

// GetCertificate calls f.
func (f CertFunc) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return f(hello)
}

var (
	_ CertSource      = CertFunc(nil)
	_ CertSource      = (*CertStore)(nil)
	_ ChallengeSource = (*CertStore)(nil)
)

// ErrNoCertificate is returned by CertStore.GetCertificate before the first Set.
var ErrNoCertificate = errors.New("no certificate configured")

// CertStore holds the certificates being served and swaps them atomically: Set
// publishes a new immutable snapshot in one step, so a handshake uses either the
// old set or the new one, never a mix, and handshakes already past certificate
// selection keep the certificate they were given. It also holds pending
// tls-alpn-01 challenge certificates.
//
// The zero value is ready to use and serves nothing until Set is called.
type CertStore struct {
	snap atomic.Pointer[certSnapshot]

	mu         sync.RWMutex
	challenges map[string]*tls.Certificate
}

type certSnapshot struct {
	exact   map[string]*tls.Certificate // lower-case name -> certificate
	wild    map[string]*tls.Certificate // parent of "*.parent" -> certificate
	primary *tls.Certificate
}

// Set replaces the served certificates. Keys of certs are DNS names, exact
// ("app.example.com") or one-label wildcards ("*.example.com"); case and a
// trailing dot are ignored. primary must be one of the keys: its certificate is
// served to clients that send no server name or a name that matches no key.
func (s *CertStore) Set(primary string, certs map[string]*tls.Certificate) error {
	snap := &certSnapshot{
		exact: make(map[string]*tls.Certificate, len(certs)),
		wild:  make(map[string]*tls.Certificate),
	}
	for name, cert := range certs {
		key := normalizeName(name)
		if err := checkHostPattern(key); err != nil {
			return fmt.Errorf("setting certificates: name %q: %w", name, err)
		}
		if cert == nil || len(cert.Certificate) == 0 || cert.PrivateKey == nil {
			return fmt.Errorf("setting certificates: name %q: certificate is empty or has no private key", name)
		}
		if parent, ok := strings.CutPrefix(key, "*."); ok {
			snap.wild[parent] = cert
		} else {
			snap.exact[key] = cert
		}
	}
	p := normalizeName(primary)
	if parent, ok := strings.CutPrefix(p, "*."); ok {
		snap.primary = snap.wild[parent]
	} else {
		snap.primary = snap.exact[p]
	}
	if snap.primary == nil {
		return fmt.Errorf("setting certificates: primary %q is not one of the names given (%s)", primary, strings.Join(sortedKeys(certs), ", "))
	}
	s.snap.Store(snap)
	return nil
}

// GetCertificate returns the certificate for hello's server name: an exact
// match, else the one-label wildcard covering it, else the primary.
func (s *CertStore) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	snap := s.snap.Load()
	if snap == nil {
		return nil, ErrNoCertificate
	}
	name := normalizeName(hello.ServerName)
	if name == "" {
		return snap.primary, nil
	}
	if c := snap.exact[name]; c != nil {
		return c, nil
	}
	if _, parent, ok := strings.Cut(name, "."); ok {
		if c := snap.wild[parent]; c != nil {
			return c, nil
		}
	}
	return snap.primary, nil
}

// SetChallengeCert registers the tls-alpn-01 challenge certificate for domain
// (as built by lego's tlsalpn01.ChallengeCert). A ClientHello for domain that
// offers the acme-tls/1 protocol gets it until ClearChallengeCert.
func (s *CertStore) SetChallengeCert(domain string, cert *tls.Certificate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.challenges == nil {
		s.challenges = make(map[string]*tls.Certificate)
	}
	s.challenges[normalizeName(domain)] = cert
}

// ClearChallengeCert removes the challenge certificate of domain.
func (s *CertStore) ClearChallengeCert(domain string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.challenges, normalizeName(domain))
}

// ChallengeCertificate returns the pending challenge certificate for serverName.
func (s *CertStore) ChallengeCertificate(serverName string) (*tls.Certificate, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, ok := s.challenges[normalizeName(serverName)]
	return c, ok && c != nil
}

// normalizeName lower-cases a DNS name and drops a trailing dot, without
// allocating in the common case of a name that is already normal.
func normalizeName(name string) string {
	name = strings.TrimSuffix(name, ".")
	for i := 0; i < len(name); i++ {
		if c := name[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(name)
		}
	}
	return name
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
