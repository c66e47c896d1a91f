package dnsread

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// CAA property tags (RFC 8659, RFC 9495 for issuemail, the CA/Browser Forum
// for contactemail and contactphone).
const (
	TagIssue     = "issue"
	TagIssueWild = "issuewild"
	TagIodef     = "iodef"
)

var knownTags = map[string]bool{
	TagIssue: true, TagIssueWild: true, TagIodef: true,
	"contactemail": true, "contactphone": true, "issuemail": true, "issuevmc": true,
}

// CAA issue parameters (RFC 8657).
const (
	ParamAccountURI        = "accounturi"
	ParamValidationMethods = "validationmethods"
)

// ErrMalformedCAA is wrapped by every CAA value parse error.
var ErrMalformedCAA = errors.New("malformed CAA issue value")

// CAAParam is one "tag=value" parameter of an issue or issuewild value.
type CAAParam struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// IssueValue is a parsed issue or issuewild property value (RFC 8659 section
// 4.2): an issuer domain name, empty when the record grants no CA, and
// parameters in the order written.
type IssueValue struct {
	Issuer string     `json:"issuer"`
	Params []CAAParam `json:"params,omitempty"`
}

// Param returns the value of the parameter key (keys compare
// case-insensitively).
func (v IssueValue) Param(key string) (string, bool) {
	for _, p := range v.Params {
		if strings.EqualFold(p.Key, key) {
			return p.Value, true
		}
	}
	return "", false
}

// String is the value in canonical form: no spaces, parameters after ";".
// A value with neither issuer nor parameters is ";".
func (v IssueValue) String() string {
	var b strings.Builder
	b.WriteString(v.Issuer)
	for _, p := range v.Params {
		b.WriteByte(';')
		b.WriteString(p.Key)
		b.WriteByte('=')
		b.WriteString(p.Value)
	}
	if b.Len() == 0 {
		return ";"
	}
	return b.String()
}

// ParseIssueValue parses an issue or issuewild property value:
//
//	issue-value = *WSP [issuer-domain-name *WSP] [";" *WSP [parameters *WSP]]
//	parameters  = (parameter *WSP ";" *WSP parameters) / parameter
//	parameter   = tag *WSP "=" *WSP value
//	value       = *(%x21-3A / %x3C-7E)
//
// A parameter key given twice makes the value malformed: two accounturi
// parameters would leave the account ambiguous.
func ParseIssueValue(s string) (IssueValue, error) {
	var v IssueValue
	i := skipWSP(s, 0)
	if i < len(s) && isAlnum(s[i]) {
		j := i
		for {
			end, ok := scanLabel(s, j)
			if !ok {
				return IssueValue{}, fmt.Errorf("%w: %q: bad issuer domain name", ErrMalformedCAA, s)
			}
			j = end
			if j < len(s) && s[j] == '.' {
				j++
				continue
			}
			break
		}
		v.Issuer = s[i:j]
		i = skipWSP(s, j)
	}
	if i == len(s) {
		return v, nil
	}
	if s[i] != ';' {
		return IssueValue{}, fmt.Errorf("%w: %q: unexpected %q at offset %d", ErrMalformedCAA, s, s[i], i)
	}
	i = skipWSP(s, i+1)
	seen := map[string]bool{}
	for i < len(s) {
		end, ok := scanLabel(s, i)
		if !ok {
			return IssueValue{}, fmt.Errorf("%w: %q: bad parameter name at offset %d", ErrMalformedCAA, s, i)
		}
		key := s[i:end]
		i = skipWSP(s, end)
		if i == len(s) || s[i] != '=' {
			return IssueValue{}, fmt.Errorf("%w: %q: parameter %q without \"=\"", ErrMalformedCAA, s, key)
		}
		i = skipWSP(s, i+1)
		j := i
		for j < len(s) && s[j] >= 0x21 && s[j] <= 0x7e && s[j] != ';' {
			j++
		}
		lk := strings.ToLower(key)
		if seen[lk] {
			return IssueValue{}, fmt.Errorf("%w: %q: parameter %q given twice", ErrMalformedCAA, s, key)
		}
		seen[lk] = true
		v.Params = append(v.Params, CAAParam{Key: key, Value: s[i:j]})
		i = skipWSP(s, j)
		if i == len(s) {
			break
		}
		if s[i] != ';' {
			return IssueValue{}, fmt.Errorf("%w: %q: unexpected %q at offset %d", ErrMalformedCAA, s, s[i], i)
		}
		i = skipWSP(s, i+1)
	}
	return v, nil
}

func skipWSP(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	return i
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// scanLabel scans (ALPHA / DIGIT) *( *("-") (ALPHA / DIGIT)) from i.
func scanLabel(s string, i int) (int, bool) {
	if i >= len(s) || !isAlnum(s[i]) {
		return i, false
	}
	end := i + 1
	j := end
	for j < len(s) {
		switch {
		case isAlnum(s[j]):
			j++
			end = j
		case s[j] == '-':
			j++
		default:
			return end, true
		}
	}
	return end, true
}

// parseMethods parses a validationmethods value: label *("," label).
func parseMethods(v string) ([]string, error) {
	var out []string
	for _, m := range strings.Split(v, ",") {
		if end, ok := scanLabel(m, 0); !ok || end != len(m) {
			return nil, fmt.Errorf("%w: validationmethods=%q: bad method %q", ErrMalformedCAA, v, m)
		}
		out = append(out, strings.ToLower(m))
	}
	return out, nil
}

// CAAPolicy is who may issue: one CA (its CAA issuer domain), one ACME
// account of it, and the validation methods that account may use.
type CAAPolicy struct {
	// IssuerDomain is the CA's CAA identity: "letsencrypt.org" for Let's
	// Encrypt, else one of the caaIdentities of the ACME directory's meta.
	IssuerDomain string `json:"issuer_domain"`
	// AccountURI is the ACME account URL (acme-account.json's .uri).
	AccountURI string `json:"account_uri"`
	// ValidationMethods are the ACME challenge types allowed. Empty:
	// ["dns-01"].
	ValidationMethods []string `json:"validation_methods"`
}

func (p CAAPolicy) methods() []string {
	if len(p.ValidationMethods) == 0 {
		return []string{"dns-01"}
	}
	return p.ValidationMethods
}

// validate checks the policy and returns it normalised.
func (p CAAPolicy) Validate() (CAAPolicy, error) {
	issuer, err := ParseHostname("CAA issuer domain", p.IssuerDomain, true)
	if err != nil {
		return p, err
	}
	if strings.Contains(issuer, "_") {
		return p, fmt.Errorf("%w: CAA issuer domain %q has an underscore", ErrInvalidName, p.IssuerDomain)
	}
	p.IssuerDomain = issuer
	u, err := url.Parse(p.AccountURI)
	if p.AccountURI == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return p, fmt.Errorf("ACME account URI %q is not an absolute http(s) URL (it comes from the ACME account registration)", p.AccountURI)
	}
	for i := 0; i < len(p.AccountURI); i++ {
		if c := p.AccountURI[i]; c < 0x21 || c > 0x7e || c == ';' {
			return p, fmt.Errorf("ACME account URI %q contains %q, which a CAA parameter cannot hold", p.AccountURI, c)
		}
	}
	var ms []string
	for _, m := range p.methods() {
		m = strings.ToLower(strings.TrimSpace(m))
		if end, ok := scanLabel(m, 0); !ok || end != len(m) {
			return p, fmt.Errorf("CAA validation method %q is not a method name like dns-01 or tls-alpn-01", m)
		}
		ms = append(ms, m)
	}
	p.ValidationMethods = ms
	return p, nil
}

// Value is the CAA issue value pinning the policy:
// "letsencrypt.org;validationmethods=dns-01;accounturi=<uri>".
func (p CAAPolicy) Value() string {
	return IssueValue{Issuer: p.IssuerDomain, Params: []CAAParam{
		{Key: ParamValidationMethods, Value: strings.Join(p.methods(), ",")},
		{Key: ParamAccountURI, Value: p.AccountURI},
	}}.String()
}

// CAARecord is one CAA resource record.
type CAARecord struct {
	Flags uint8  `json:"flags"`
	Tag   string `json:"tag"`
	Value string `json:"value"`
}

// Critical reports whether the issuer critical flag (128) is set.
func (r CAARecord) Critical() bool { return r.Flags&128 != 0 }

func (r CAARecord) String() string { return fmt.Sprintf("%d %s %q", r.Flags, r.Tag, r.Value) }

// CAASet is the relevant CAA record set of a name (RFC 8659 section 3).
type CAASet struct {
	// Name is the name asked about, as an FQDN ("*.example.com." for a
	// wildcard, whose set is searched from example.com).
	Name string `json:"name"`
	// Searched lists the names queried, from the name up towards the root.
	Searched []string `json:"searched"`
	// Owner is the name whose records form the set, "" when none was found.
	Owner string `json:"owner,omitempty"`
	// Aliases are the CNAME targets followed from Owner to the records.
	Aliases []string `json:"aliases,omitempty"`
	// Records is the set; empty means any CA may issue.
	Records []CAARecord `json:"records"`
	// Notes are observations that did not stop the search (a resolver
	// refusing a name it does not serve).
	Notes []string `json:"notes,omitempty"`
}

// LookupCAA returns the relevant CAA set for name per RFC 8659: the CAA
// records at name, else at its parent, and so on up to (not including) the
// root, where CAA(X) follows CNAMEs at X but the climb continues from X's
// parent, not the alias target's. For "*.example.com" the search starts at
// example.com. resolver is "host:port" of the DNS server to ask (empty: the
// system's). A lookup failure (SERVFAIL, timeout) is an error, as it forbids
// issuance.
func LookupCAA(ctx context.Context, resolver, name string) (*CAASet, error) {
	r := &Resolver{}
	if resolver != "" {
		r.Servers = []string{resolver}
	}
	return r.LookupCAA(ctx, name)
}

// LookupCAA is the package-level LookupCAA through r's servers.
func (r *Resolver) LookupCAA(ctx context.Context, name string) (*CAASet, error) {
	n := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(name), "."))
	set := &CAASet{Name: n + "."}
	start := strings.TrimPrefix(n, "*.")
	if err := CheckHostname(start, true); err != nil || strings.Contains(start, "*") {
		return nil, fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	for cur := FQDN(start); cur != "."; cur = parentName(cur) {
		set.Searched = append(set.Searched, cur)
		recs, aliases, err := r.caaAt(ctx, cur, set)
		if err != nil {
			return nil, err
		}
		if len(recs) > 0 {
			set.Owner, set.Aliases, set.Records = cur, aliases, recs
			return set, nil
		}
	}
	return set, nil
}

// caaAt returns CAA(name): the CAA records at name, following CNAMEs.
func (r *Resolver) caaAt(ctx context.Context, name string, set *CAASet) ([]CAARecord, []string, error) {
	target := name
	var aliases []string
	seen := map[string]bool{name: true}
	asked := map[string]bool{}
	for range maxCNAMEHops {
		asked[target] = true
		m, err := r.Query(ctx, target, dns.TypeCAA)
		if err != nil {
			if m != nil && m.Rcode == dns.RcodeRefused {
				set.Notes = append(set.Notes, fmt.Sprintf("the resolver refused CAA %s (a name it does not serve); treated as no records", target))
				return nil, aliases, nil
			}
			return nil, aliases, fmt.Errorf("looking up CAA at %s: %w", target, err)
		}
		if m.Rcode == dns.RcodeNameError {
			return nil, aliases, nil
		}
		// The answer may carry a CNAME chain and the records at its end.
		for {
			next := ""
			for _, rr := range m.Answer {
				if c, ok := rr.(*dns.CNAME); ok && FQDN(c.Hdr.Name) == target {
					next = FQDN(c.Target)
				}
			}
			if next == "" {
				break
			}
			if seen[next] {
				return nil, aliases, fmt.Errorf("looking up CAA at %s: CNAME loop at %s", name, next)
			}
			seen[next] = true
			aliases = append(aliases, next)
			target = next
		}
		var recs []CAARecord
		for _, rr := range m.Answer {
			if c, ok := rr.(*dns.CAA); ok && FQDN(c.Hdr.Name) == target {
				recs = append(recs, CAARecord{Flags: c.Flag, Tag: strings.ToLower(c.Tag), Value: c.Value})
			}
		}
		if len(recs) > 0 || len(aliases) == 0 || hasOwner(m, target) || asked[target] {
			return recs, aliases, nil
		}
		// An authoritative server stops at the edge of its zones: ask
		// for the CAA records at the alias target itself.
	}
	return nil, aliases, fmt.Errorf("looking up CAA at %s: more than %d CNAMEs", name, maxCNAMEHops)
}

// hasOwner reports whether the answer says something about name other than a
// CNAME, or is a negative answer for it, so that asking again is pointless.
func hasOwner(m *dns.Msg, name string) bool {
	for _, rr := range m.Answer {
		if FQDN(rr.Header().Name) == name {
			if _, ok := rr.(*dns.CNAME); !ok {
				return true
			}
		}
	}
	return false
}

// CAAFinding is the verdict on one record of a checked set.
type CAAFinding struct {
	Record CAARecord `json:"record"`
	// Grants is "us" (the policy's issuer, account and methods), "other" (a
	// CA, account or method the policy does not allow), "none" (no CA, or a
	// malformed value that authorizes nobody), or "ignored" (a record of
	// another tag).
	Grants string `json:"grants"`
	Detail string `json:"detail,omitempty"`
}

// CAACheck is the result of CheckCAA: the set, the tag that governs the name,
// a verdict per record, and the problems found.
type CAACheck struct {
	Set      *CAASet      `json:"set"`
	Wildcard bool         `json:"wildcard"`
	Tag      string       `json:"tag"`
	Want     string       `json:"want"`
	Findings []CAAFinding `json:"findings"`
	Problems []string     `json:"problems,omitempty"`
}

// OK reports whether only the policy's issuer, account and methods may issue
// for the name, and they may.
func (c CAACheck) OK() bool { return len(c.Problems) == 0 }

// CheckCAA checks that set lets exactly the policy's CA, with the policy's
// account and validation methods, issue for the name it was looked up for
// (a wildcard when set.Name starts with "*."): every record of the governing
// tag (issuewild for a wildcard when the set has any, else issue) must either
// grant nothing or grant exactly that, at least one must grant it, and no
// record may carry the critical flag with a tag the CA would not understand.
func CheckCAA(set *CAASet, want CAAPolicy) CAACheck {
	c := CAACheck{Set: set, Tag: TagIssue, Want: want.Value()}
	if set == nil {
		c.Problems = append(c.Problems, "no CAA lookup result")
		return c
	}
	c.Wildcard = strings.HasPrefix(set.Name, "*.")
	if c.Wildcard {
		for _, r := range set.Records {
			if r.Tag == TagIssueWild {
				c.Tag = TagIssueWild
			}
		}
	}
	wantMethods := map[string]bool{}
	for _, m := range want.methods() {
		wantMethods[strings.ToLower(m)] = true
	}
	granted := false
	for _, r := range set.Records {
		f := CAAFinding{Record: r, Grants: "ignored"}
		switch {
		case r.Critical() && !knownTags[r.Tag]:
			f.Grants = "none"
			f.Detail = fmt.Sprintf("critical flag on tag %q, which a CA does not understand: no CA may issue", r.Tag)
			c.Problems = append(c.Problems, fmt.Sprintf("%s: %s", set.Owner, f.Detail))
		case r.Tag != c.Tag:
		default:
			f.Grants, f.Detail = judgeIssue(r.Value, want, wantMethods)
			switch f.Grants {
			case "us":
				granted = true
			case "other":
				c.Problems = append(c.Problems, fmt.Sprintf("%s %s %q: %s", set.Owner, r.Tag, r.Value, f.Detail))
			}
		}
		c.Findings = append(c.Findings, f)
	}
	switch {
	case len(set.Records) == 0:
		c.Problems = append(c.Problems, fmt.Sprintf("no CAA records for %s or any parent: any CA may issue", strings.TrimPrefix(set.Name, "*.")))
	case !hasTag(set.Records, c.Tag):
		c.Problems = append(c.Problems, fmt.Sprintf("no %s records at %s: any CA may issue", c.Tag, set.Owner))
	case !granted:
		c.Problems = append(c.Problems, fmt.Sprintf("no %s record at %s grants %s", c.Tag, set.Owner, c.Want))
	}
	return c
}

func hasTag(recs []CAARecord, tag string) bool {
	for _, r := range recs {
		if r.Tag == tag {
			return true
		}
	}
	return false
}

func judgeIssue(value string, want CAAPolicy, wantMethods map[string]bool) (string, string) {
	v, err := ParseIssueValue(value)
	if err != nil {
		return "none", "malformed value authorizes no CA: " + err.Error()
	}
	if v.Issuer == "" {
		return "none", "no CA may issue"
	}
	if !strings.EqualFold(v.Issuer, want.IssuerDomain) {
		return "other", fmt.Sprintf("lets another CA issue (%s, want %s)", v.Issuer, want.IssuerDomain)
	}
	acct, ok := v.Param(ParamAccountURI)
	if !ok {
		return "other", fmt.Sprintf("lets any account of %s issue (no accounturi)", v.Issuer)
	}
	if acct != want.AccountURI {
		return "other", fmt.Sprintf("lets another account issue (accounturi=%s, want %s)", acct, want.AccountURI)
	}
	mv, ok := v.Param(ParamValidationMethods)
	if !ok {
		return "other", "lets any validation method be used (no validationmethods)"
	}
	methods, err := parseMethods(mv)
	if err != nil {
		return "none", "malformed value authorizes no CA: " + err.Error()
	}
	for _, m := range methods {
		if !wantMethods[m] {
			return "other", fmt.Sprintf("allows validation method %s (want only %s)", m, strings.Join(want.methods(), ","))
		}
	}
	return "us", ""
}

// PermitsCAA says whether set lets want's CA, with want's account and its
// first validation method, issue for the name looked up, as a CA reads it
// (RFC 8659, RFC 8657): an empty set permits any CA; otherwise a record of
// the governing tag must name the CA, and its accounturi and
// validationmethods, where present, must admit want's. When not, it says
// which records refuse.
func PermitsCAA(set *CAASet, want CAAPolicy) (bool, string) {
	if set == nil || len(set.Records) == 0 {
		return true, ""
	}
	tag := TagIssue
	if strings.HasPrefix(set.Name, "*.") && hasTag(set.Records, TagIssueWild) {
		tag = TagIssueWild
	}
	method := strings.ToLower(want.methods()[0])
	var why []string
	for _, r := range set.Records {
		if r.Critical() && !knownTags[r.Tag] {
			return false, fmt.Sprintf("%s CAA %s: critical flag on a tag no CA understands", set.Owner, r)
		}
		if r.Tag != tag {
			continue
		}
		v, err := ParseIssueValue(r.Value)
		switch {
		case err != nil || v.Issuer == "":
			why = append(why, fmt.Sprintf("%s grants no CA", r))
		case !strings.EqualFold(v.Issuer, want.IssuerDomain):
			why = append(why, fmt.Sprintf("%s names %s", r, v.Issuer))
		default:
			if acct, ok := v.Param(ParamAccountURI); ok && acct != want.AccountURI {
				why = append(why, fmt.Sprintf("%s pins another account", r))
				continue
			}
			if mv, ok := v.Param(ParamValidationMethods); ok {
				ms, err := parseMethods(mv)
				if err != nil || !slices.Contains(ms, method) {
					why = append(why, fmt.Sprintf("%s does not allow %s", r, method))
					continue
				}
			}
			return true, ""
		}
	}
	if len(why) == 0 {
		return false, fmt.Sprintf("%s has CAA records but no %s record: no CA may issue", set.Owner, tag)
	}
	return false, fmt.Sprintf("CAA at %s refuses %s (account %s, %s): %s", set.Owner, want.IssuerDomain, want.AccountURI, method, strings.Join(why, "; "))
}
