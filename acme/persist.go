package acme

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	legoacme "github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/acme/api"
	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/certificate"

	"github.com/tee-ingress/tee-ingress/dnsread"
	"github.com/tee-ingress/tee-ingress/internal/fielderr"
)

// dns-persist-01: lego v4 has no solver for it, so the order is driven
// through lego's ACME API: new order, accept the dns-persist-01 challenge
// of each authorisation (there is nothing to present: the standing record
// is the answer), finalize, download. Storage, renewal and evidence are the
// same as for the other methods.

// persistPoll is how often a pending authorisation or order is looked at
// again when the CA gives no Retry-After; persistTimeout bounds each wait.
const (
	persistPoll    = time.Second
	persistTimeout = 90 * time.Second
)

// PersistRecords are the dns-persist-01 records domains need for this
// account and CA: one per base name, with policy=wildcard where a wildcard
// of it is served. Keys are record names.
func PersistRecords(domains []string, issuer, accountURI string) map[string]dnsread.Persist {
	out := map[string]dnsread.Persist{}
	for _, d := range domains {
		name := dnsread.PersistName(d)
		p := out[name]
		p.Issuer, p.AccountURI = issuer, accountURI
		p.Wildcard = p.Wildcard || strings.HasPrefix(d, "*.")
		out[name] = p
	}
	return out
}

// checkPersistLocked looks the records up before ordering, so that a
// missing or wrong one is reported by name, without an order counted at
// the CA.
func (m *Manager) checkPersistLocked(ctx context.Context, domains []string) error {
	issuer, err := m.caaIssuerLocked()
	if err != nil {
		return err
	}
	for name, want := range PersistRecords(domains, issuer, m.user.reg.URI) {
		txts, err := m.cfg.Resolver.LookupTXT(ctx, name)
		if err != nil {
			return fmt.Errorf("acme: looking up the dns-persist-01 record %s: %w", name, err)
		}
		if err := dnsread.CheckPersist(name, txts, want, m.now()); err != nil {
			return fmt.Errorf("acme: %w (not ordering until it is in DNS)", err)
		}
	}
	return nil
}

// obtainPersist is certificate.Obtain for dns-persist-01.
func (m *Manager) obtainPersist(ctx context.Context, req certificate.ObtainRequest) (*certificate.Resource, error) {
	if m.core == nil {
		core, err := api.New(m.cfg.HTTPClient, "tee-ingress", m.cfg.DirectoryURL, m.user.reg.URI, m.user.key)
		if err != nil {
			return nil, fmt.Errorf("connecting to %s: %w", m.cfg.DirectoryURL, err)
		}
		m.core = core
	}
	order, err := m.core.Orders.NewWithOptions(req.Domains, &api.OrderOptions{ReplacesCertID: req.ReplacesCertID})
	if err != nil {
		return nil, err
	}
	for _, authzURL := range order.Authorizations {
		if err := m.validatePersist(ctx, authzURL); err != nil {
			return nil, err
		}
	}
	key, err := certcrypto.GeneratePrivateKey(m.cfg.KeyType)
	if err != nil {
		return nil, err
	}
	csr, err := certcrypto.GenerateCSR(key, req.Domains[0], req.Domains, false)
	if err != nil {
		return nil, err
	}
	if _, err := m.core.Orders.UpdateForCSR(order.Finalize, csr); err != nil {
		return nil, fmt.Errorf("finalizing the order: %w", err)
	}
	done, err := pollUntil(ctx, func() (bool, error) {
		o, err := m.core.Orders.Get(order.Location)
		if err != nil {
			return false, err
		}
		if o.Status == legoacme.StatusInvalid {
			return false, fmt.Errorf("the CA refused to issue: %w", o.Err())
		}
		order.Certificate = o.Certificate
		return o.Status == legoacme.StatusValid, nil
	})
	if err != nil || !done {
		return nil, errOr(err, "the CA did not issue within %s", persistTimeout)
	}
	chain, issuer, err := m.core.Certificates.Get(order.Certificate, true)
	if err != nil {
		return nil, fmt.Errorf("downloading the certificate: %w", err)
	}
	return &certificate.Resource{Domain: req.Domains[0], CertURL: order.Certificate, Certificate: chain,
		IssuerCertificate: issuer, PrivateKey: certcrypto.PEMEncode(key)}, nil
}

// validatePersist accepts the dns-persist-01 challenge of one authorisation
// and waits for the CA's verdict.
func (m *Manager) validatePersist(ctx context.Context, authzURL string) error {
	authz, err := m.core.Authorizations.Get(authzURL)
	if err != nil {
		return err
	}
	if authz.Status == legoacme.StatusValid {
		return nil
	}
	i := slices.IndexFunc(authz.Challenges, func(c legoacme.Challenge) bool { return c.Type == string(DNSPersist01) })
	if i < 0 {
		var offered []string
		for _, c := range authz.Challenges {
			offered = append(offered, c.Type)
		}
		return &fielderr.Error{Field: "Challenge", Value: string(DNSPersist01),
			Problem:  fmt.Sprintf("the CA offers no dns-persist-01 challenge for %s (it offers %s)", authz.Identifier.Value, strings.Join(offered, ", ")),
			Accepted: "dns-01 with this CA"}
	}
	if _, err := m.core.Challenges.New(authz.Challenges[i].URL); err != nil {
		return fmt.Errorf("accepting the dns-persist-01 challenge for %s: %w", authz.Identifier.Value, err)
	}
	done, err := pollUntil(ctx, func() (bool, error) {
		a, err := m.core.Authorizations.Get(authzURL)
		if err != nil {
			return false, err
		}
		switch a.Status {
		case legoacme.StatusValid:
			return true, nil
		case legoacme.StatusPending, legoacme.StatusProcessing:
			return false, nil
		}
		for _, c := range a.Challenges {
			if c.Type == string(DNSPersist01) && c.Error != nil {
				return false, fmt.Errorf("%s: the CA did not accept the dns-persist-01 record: %w", a.Identifier.Value, c.Error)
			}
		}
		return false, fmt.Errorf("%s: authorization %s", a.Identifier.Value, a.Status)
	})
	if err != nil || !done {
		return errOr(err, "%s: the CA did not validate within %s", authz.Identifier.Value, persistTimeout)
	}
	return nil
}

// pollUntil calls f every persistPoll until it reports done, fails, or
// persistTimeout or ctx ends (then done is false and err nil or ctx's).
func pollUntil(ctx context.Context, f func() (bool, error)) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, persistTimeout)
	defer cancel()
	t := time.NewTicker(persistPoll)
	defer t.Stop()
	for {
		done, err := f()
		if done || err != nil {
			return done, err
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return false, nil
			}
			return false, ctx.Err()
		case <-t.C:
		}
	}
}

func errOr(err error, format string, a ...any) error {
	if err != nil {
		return err
	}
	return fmt.Errorf(format, a...)
}
