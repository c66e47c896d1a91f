package dnscaa

import (
	"context"
	"fmt"

	"github.com/tee-ingress/tee-ingress/dnsread"
)

// Pinner writes the CAA records that let only one ACME account, of one CA,
// with one validation method, issue for a set of domains. The acme package
// calls it after the account exists and before every order.
type Pinner struct {
	// Provider writes the records. Required.
	Provider Provider
	// Apply configures zone discovery and logging.
	Apply ApplyOptions
	// DelegationZone is DELEGATION_ZONE. Empty: records go into each
	// domain's own zone.
	DelegationZone string
}

// PinCAA plans and applies the CAA records for domains (issue at each name,
// issuewild at the base of a wildcard), leaving every other record alone.
func (p *Pinner) PinCAA(ctx context.Context, domains []string, issuer, accountURI, method string) error {
	if p.Provider == nil {
		return fmt.Errorf("pinning CAA: no DNS provider configured")
	}
	plan, err := NewPlan(PlanConfig{
		Domains:        domains,
		CAA:            &dnsread.CAAPolicy{IssuerDomain: issuer, AccountURI: accountURI, ValidationMethods: []string{method}},
		DelegationZone: p.DelegationZone,
	})
	if err != nil {
		return err
	}
	_, err = Apply(ctx, p.Provider, plan, p.Apply)
	return err
}
