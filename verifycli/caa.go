package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/tee-ingress/tee-ingress/dnsread"
)

// caaCheck reads the CAA record set relevant to name (a "*." name for a
// wildcard) and checks that it lets only the deployment's CA, ACME account
// and validation methods issue.
func caaCheck(ctx context.Context, o *options, checkName, name, accountURI string) checkT {
	c := checkT{Name: checkName}
	if accountURI == "" {
		c.Status, c.Detail = skip, "no account URI to compare (the account record failed its check)"
		return c
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	r := &dnsread.Resolver{Timeout: o.timeout}
	via := "the system's resolvers"
	if o.resolver != "" {
		r.Servers = []string{o.resolver}
		via = o.resolver
	}
	set, err := r.LookupCAA(ctx, name)
	if err != nil {
		c.Status, c.Detail = warn, fmt.Sprintf("CAA lookup for %s through %s failed: %v", name, via, err)
		c.Hint = "the pinning could not be checked; retry, or give a working resolver with --resolver (while lookups fail, CAs refuse to issue too)"
		return c
	}
	issuer, how := caaIssuer(o.caaIssuer, accountURI, set)
	policy := dnsread.CAAPolicy{IssuerDomain: issuer, AccountURI: accountURI, ValidationMethods: o.methods}
	chk := dnsread.CheckCAA(set, policy)
	c.Want = fmt.Sprintf("%s %s", chk.Tag, policy.Value())
	var recs []string
	for _, rec := range set.Records {
		recs = append(recs, rec.String())
	}
	c.Got = strings.Join(recs, "; ")
	if c.Got == "" {
		c.Got = "no CAA records"
	}
	owner := set.Owner
	if owner == "" {
		owner = strings.TrimPrefix(set.Name, "*.")
	}
	if !chk.OK() {
		c.Status = fail
		c.Detail = fmt.Sprintf("CAA for %s (through %s): %s", name, via, strings.Join(chk.Problems, "; "))
		if issuer == "" {
			c.Detail += "; the CA's issuer domain is unknown, give it with --caa-issuer"
		}
		c.Hint = fmt.Sprintf("another CA, account or validation method can obtain a certificate for %s: publish only 0 %s %q at %s (SET_CAA=true does it)",
			name, chk.Tag, policy.Value(), owner)
		return c
	}
	c.Status = pass
	c.Detail = fmt.Sprintf("the CAA set at %s (through %s) lets only %s issue, for this account, with %s; issuer %s",
		owner, via, issuer, strings.Join(o.methods, ","), how)
	return c
}

// caaIssuer is the CA's CAA issuer domain: --caa-issuer; else
// letsencrypt.org for a Let's Encrypt account URI; else the issuer of the
// record that names the account (a CA honours only records naming itself,
// so the record naming our account names our CA). "" when none does.
func caaIssuer(flag, accountURI string, set *dnsread.CAASet) (string, string) {
	if flag != "" {
		return strings.ToLower(flag), "from --caa-issuer"
	}
	if u, err := url.Parse(accountURI); err == nil {
		h := strings.ToLower(u.Hostname())
		if h == "letsencrypt.org" || strings.HasSuffix(h, ".api.letsencrypt.org") {
			return "letsencrypt.org", "for a Let's Encrypt account"
		}
	}
	for _, rec := range set.Records {
		if rec.Tag != dnsread.TagIssue && rec.Tag != dnsread.TagIssueWild {
			continue
		}
		v, err := dnsread.ParseIssueValue(rec.Value)
		if err != nil || v.Issuer == "" {
			continue
		}
		if a, ok := v.Param(dnsread.ParamAccountURI); ok && a == accountURI {
			return strings.ToLower(v.Issuer), "taken from the record naming the account (use --caa-issuer to fix it)"
		}
	}
	return "", "unknown"
}
