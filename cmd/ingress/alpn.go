package main

import (
	"fmt"

	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/challenge/tlsalpn01"

	"github.com/tee-ingress/tee-ingress/proxy"
)

// alpnSolver answers tls-alpn-01 on the listen port: lego hands it the key
// authorization, it builds the challenge certificate and registers it in the
// proxy's certificate store, which presents it to a ClientHello offering
// acme-tls/1 for the domain. No second port, no second listener.
type alpnSolver struct {
	store *proxy.CertStore
}

var _ challenge.Provider = (*alpnSolver)(nil)

func (s *alpnSolver) Present(domain, _, keyAuth string) error {
	cert, err := tlsalpn01.ChallengeCert(domain, keyAuth)
	if err != nil {
		return fmt.Errorf("building the tls-alpn-01 certificate for %s: %w", domain, err)
	}
	s.store.SetChallengeCert(domain, cert)
	return nil
}

func (s *alpnSolver) CleanUp(domain, _, _ string) error {
	s.store.ClearChallengeCert(domain)
	return nil
}
