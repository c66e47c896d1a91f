package dnsread

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// dns-persist-01 (draft-ietf-acme-dns-persist, CA/Browser Forum ballot
// SC-088): one standing TXT record authorises an ACME account of a CA to
// validate a name, with no record written per order. Its value has the
// syntax of a CAA issue value (RFC 8659 section 4.2):
//
//	_validation-persist.example.com. TXT "letsencrypt.org;accounturi=https://...;policy=wildcard"
const (
	PersistLabel      = "_validation-persist"
	ParamPolicy       = "policy"
	ParamPersistUntil = "persistUntil"
	PolicyWildcard    = "wildcard"
)

// PersistName is the name of domain's dns-persist-01 record: a wildcard
// "*.B" and its base B share "_validation-persist.B.".
func PersistName(domain string) string {
	return FQDN(PersistLabel + "." + strings.TrimPrefix(Unfqdn(domain), "*."))
}

// Persist is a dns-persist-01 authorisation.
type Persist struct {
	// Issuer is the CA's issuer domain name, as in CAA.
	Issuer string `json:"issuer"`
	// AccountURI is the ACME account the record authorises.
	AccountURI string `json:"account_uri"`
	// Wildcard is policy=wildcard: wildcard names (and subdomains) too.
	Wildcard bool `json:"wildcard,omitempty"`
	// Until is persistUntil: the record stops authorising after it. Zero:
	// no end.
	Until time.Time `json:"until,omitzero"`
}

// Value is the record's TXT value.
func (p Persist) Value() string {
	v := IssueValue{Issuer: p.Issuer, Params: []CAAParam{{Key: ParamAccountURI, Value: p.AccountURI}}}
	if p.Wildcard {
		v.Params = append(v.Params, CAAParam{Key: ParamPolicy, Value: PolicyWildcard})
	}
	if !p.Until.IsZero() {
		v.Params = append(v.Params, CAAParam{Key: ParamPersistUntil, Value: strconv.FormatInt(p.Until.Unix(), 10)})
	}
	return v.String()
}

// ParsePersist reads a dns-persist-01 TXT value. Unknown parameters are
// kept out; a policy other than wildcard counts as none, as the draft says.
func ParsePersist(s string) (Persist, error) {
	v, err := ParseIssueValue(s)
	if err != nil {
		return Persist{}, err
	}
	if v.Issuer == "" {
		return Persist{}, fmt.Errorf("%w: %q: no issuer domain name", ErrMalformedCAA, s)
	}
	p := Persist{Issuer: strings.ToLower(v.Issuer)}
	p.AccountURI, _ = v.Param(ParamAccountURI)
	if pol, ok := v.Param(ParamPolicy); ok && strings.EqualFold(pol, PolicyWildcard) {
		p.Wildcard = true
	}
	if u, ok := v.Param(ParamPersistUntil); ok {
		n, err := strconv.ParseInt(u, 10, 64)
		if err != nil {
			return Persist{}, fmt.Errorf("%w: %q: persistUntil=%q is not a Unix time", ErrMalformedCAA, s, u)
		}
		p.Until = time.Unix(n, 0).UTC()
	}
	return p, nil
}

// CheckPersist says whether one of the TXT values found at want's name
// authorises want at time at; if none does, the error says what was found
// and what the record must hold. Records of other CAs are not ours to judge.
func CheckPersist(name string, txts []string, want Persist, at time.Time) error {
	var found []string
	for _, t := range txts {
		p, err := ParsePersist(t)
		if err != nil {
			if v, perr := ParseIssueValue(t); perr == nil && !strings.EqualFold(v.Issuer, want.Issuer) {
				continue
			}
			found = append(found, fmt.Sprintf("%q is malformed (%v)", t, err))
			continue
		}
		if !strings.EqualFold(p.Issuer, want.Issuer) {
			continue
		}
		switch {
		case p.AccountURI != want.AccountURI:
			found = append(found, fmt.Sprintf("%q names account %q", t, p.AccountURI))
		case want.Wildcard && !p.Wildcard:
			found = append(found, fmt.Sprintf("%q lacks policy=wildcard, needed for a wildcard name", t))
		case !p.Until.IsZero() && !at.Before(p.Until):
			found = append(found, fmt.Sprintf("%q expired at persistUntil %s", t, p.Until.Format(time.RFC3339)))
		default:
			return nil
		}
	}
	what := "no record for issuer " + want.Issuer
	if len(found) > 0 {
		what = strings.Join(found, "; ")
	}
	return fmt.Errorf("dns-persist-01: %s TXT must be %q: %s", name, want.Value(), what)
}

// LookupTXT returns the TXT values at name (each one's strings joined, as
// a TXT value is read), following CNAMEs as a CA does.
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	m, err := r.Query(ctx, FQDN(name), dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	if m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError {
		return nil, fmt.Errorf("TXT %s: %s", name, dns.RcodeToString[m.Rcode])
	}
	var out []string
	for _, rr := range m.Answer {
		if t, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(t.Txt, ""))
		}
	}
	return out, nil
}
