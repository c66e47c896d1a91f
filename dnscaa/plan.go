package dnscaa

import (
	"context"
	"fmt"
	"github.com/tee-ingress/tee-ingress/internal/fielderr"
	"sort"
	"strconv"
	"strings"

	"github.com/miekg/dns"

	"github.com/tee-ingress/tee-ingress/dnsread"
)

// DefaultTXTPrefix is TXT_PREFIX's default, the label of the gateway routing
// record.
const DefaultTXTPrefix = "_dstack-app-address"

// ChallengeLabel is the label of DNS-01 challenge records (RFC 8555).
const ChallengeLabel = "_acme-challenge"

// PlanConfig is what a deployment's DNS records are made of. Field names give
// the environment variables they come from.
type PlanConfig struct {
	// Domains are DOMAIN and DOMAINS; "*.example.com" is allowed. At least
	// one is required.
	Domains []string
	// GatewayDomain is GATEWAY_DOMAIN, the target of each domain's CNAME,
	// e.g. "_.dstack-prod5.phala.network". Empty: no CNAME is planned.
	GatewayDomain string
	// TXTPrefix is TXT_PREFIX. Empty: DefaultTXTPrefix.
	TXTPrefix string
	// AppID is the identity the gateway routes to, published as
	// "<AppID>:<Port>": dstack's app_id, or the instance_id in tls-alpn-01
	// mode. Empty: no routing TXT record is planned.
	AppID string
	// Port is the port published with AppID (PORT). Required with AppID.
	Port int
	// CAA pins issuance to one CA, account and method (SET_CAA). nil: no
	// CAA record is planned.
	CAA *dnsread.CAAPolicy
	// Persist, when set, plans the dns-persist-01 records that authorise
	// this CA (Issuer) and account (AccountURI) for every domain; Wildcard
	// and Until are ignored (policy=wildcard is set where a wildcard is
	// served). Nil: none.
	Persist *dnsread.Persist
	// DelegationZone is DELEGATION_ZONE: when set, every record is written
	// into this zone under the served name ("app.example.com" becomes
	// "app.example.com.<zone>"), and the operator points the served names
	// there with CNAMEs created once by hand (Plan.Operator), as
	// dstack-ingress does. Empty: records go into the served domain's zone.
	DelegationZone string
}

// record kinds, which decide what an existing record at the same name is.
type kind int

const (
	// kindAlias: the gateway CNAME. A/AAAA/CNAME at the name are replaced;
	// anything else there (but a CAA where the provider allows it) is an
	// error, since a CNAME must be alone at its name.
	kindAlias kind = iota
	// kindRouting: the routing TXT. The name is ours: every other TXT at it
	// is replaced.
	kindRouting
	// kindCAA: a CAA issue/issuewild record. Records of the same tag at the
	// name are replaced; iodef and other tags stay.
	kindCAA
	// kindPersist: a dns-persist-01 TXT. Records naming the same CA are
	// replaced; other CAs' stay.
	kindPersist
)

func (k kind) String() string {
	switch k {
	case kindAlias:
		return "gateway alias"
	case kindRouting:
		return "gateway routing"
	case kindPersist:
		return "dns-persist-01 authorisation"
	default:
		return "CAA pinning"
	}
}

type planned struct {
	Record
	kind   kind
	domain string
}

// Plan is the set of records a deployment needs, validated. It is built
// without I/O; Preview and Apply compare it with a zone.
type Plan struct {
	records    []planned
	operator   []Record
	delegation string
}

// Records are the records the plan writes, in a stable order.
func (p *Plan) Records() []Record {
	out := make([]Record, len(p.records))
	for i, r := range p.records {
		out[i] = r.Record
	}
	return out
}

// Operator lists, in delegation mode, the CNAMEs the operator creates once in
// the served domain's zone so that its names lead into the delegation zone.
// The plan never writes them: the token is not supposed to reach that zone.
func (p *Plan) Operator() []Record { return append([]Record(nil), p.operator...) }

// DelegationZone is the zone every record goes into, "" when not delegated.
func (p *Plan) DelegationZone() string { return p.delegation }

// ChallengeName is where the DNS-01 TXT record for domain is written:
// "_acme-challenge.<base>." or, delegated, "_acme-challenge.<base>.<zone>.".
func ChallengeName(domain, delegationZone string) string {
	base := strings.TrimPrefix(unfqdn(domain), "*.")
	if delegationZone != "" {
		return fqdn(ChallengeLabel + "." + base + "." + unfqdn(delegationZone))
	}
	return fqdn(ChallengeLabel + "." + base)
}

// planInputs are PlanConfig's values, checked and normalised.
type planInputs struct {
	domains []Domain
	prefix  string             // TXT_PREFIX or the default
	gateway string             // "" without a gateway alias
	txt     string             // routing record value; "" without an app id
	caa     *dnsread.CAAPolicy // nil without CAA
	zone    string             // delegation zone; "" without
}

func parsePlanInputs(cfg PlanConfig) (planInputs, error) {
	var in planInputs
	if len(cfg.Domains) == 0 {
		return planInputs{}, &fielderr.Error{Field: "Domains", Problem: "no domain configured", Accepted: "a name like app.example.com or *.example.com"}
	}
	seen := map[string]bool{}
	for _, s := range cfg.Domains {
		d, err := ParseDomain(s)
		if err != nil {
			return planInputs{}, &fielderr.Error{Field: "Domains", Err: err}
		}
		if !seen[d.Name] {
			seen[d.Name] = true
			in.domains = append(in.domains, d)
		}
	}
	in.prefix = cfg.TXTPrefix
	if in.prefix == "" {
		in.prefix = DefaultTXTPrefix
	}
	if err := dnsread.CheckLabel(in.prefix, true); err != nil {
		return planInputs{}, &fielderr.Error{Field: "TXTPrefix", Value: cfg.TXTPrefix, Problem: "not one DNS label", Err: err, Accepted: "one label; the default is " + DefaultTXTPrefix}
	}
	if cfg.GatewayDomain != "" {
		g, err := parseHostname("the gateway domain", cfg.GatewayDomain, false)
		if err != nil {
			return planInputs{}, &fielderr.Error{Field: "GatewayDomain", Value: cfg.GatewayDomain, Err: err, Accepted: "the gateway's base name, e.g. _.dstack-prod5.phala.network"}
		}
		in.gateway = g
		for _, d := range in.domains {
			if d.Name == g || d.Base() == g {
				return planInputs{}, &fielderr.Error{Field: "GatewayDomain", Value: g, Problem: "is one of the served domains: the CNAME would point at itself"}
			}
		}
	}
	if cfg.AppID != "" {
		if err := checkAppID(cfg.AppID); err != nil {
			return planInputs{}, &fielderr.Error{Field: "AppID", Err: err}
		}
		if cfg.Port < 1 || cfg.Port > 65535 {
			return planInputs{}, &fielderr.Error{Field: "Port", Value: strconv.Itoa(cfg.Port), Problem: "missing or out of range: the routing record " + DefaultTXTPrefix + " needs the listen port", Accepted: "1-65535"}
		}
		in.txt = cfg.AppID + ":" + strconv.Itoa(cfg.Port)
	}
	if cfg.CAA != nil {
		pol, err := cfg.CAA.Validate()
		if err != nil {
			return planInputs{}, &fielderr.Error{Field: "CAA", Err: err}
		}
		in.caa = &pol
	}
	if cfg.DelegationZone != "" {
		z, err := parseHostname("the delegation zone", cfg.DelegationZone, false)
		if err != nil {
			return planInputs{}, &fielderr.Error{Field: "DelegationZone", Value: cfg.DelegationZone, Err: err}
		}
		in.zone = z
	}

	return in, nil
}

// NewPlan validates cfg and builds the records of DESIGN.md section 5 for
// each domain D (wildcard "*.B"):
//
//	D CNAME <GatewayDomain>                    (*.B CNAME ...)
//	<TXTPrefix>.D TXT "<AppID>:<Port>"         (<TXTPrefix>-wildcard.B)
//	D CAA 0 issue "<issuer>;validationmethods=dns-01;accounturi=<uri>"
//	                                           (B CAA 0 issuewild ...)
//
// all with TTL 60. Every error names the setting that is wrong and what it
// accepts.
func NewPlan(cfg PlanConfig) (*Plan, error) {
	inputs, err := parsePlanInputs(cfg)
	if err != nil {
		return nil, err
	}
	domains, prefix, gateway, txt, caa, zone := inputs.domains, inputs.prefix, inputs.gateway, inputs.txt, inputs.caa, inputs.zone
	p := &Plan{delegation: zone}
	// in maps a served name to where its record lives.
	in := func(name string) string {
		if zone == "" {
			return fqdn(name)
		}
		return fqdn(unfqdn(name) + "." + zone)
	}
	// operator notes the CNAME from a served name to the delegation zone.
	operator := func(from, to string) {
		if zone != "" {
			p.operator = append(p.operator, Record{Name: fqdn(from), Type: TypeCNAME, Value: in(to), TTL: TTL})
		}
	}
	for _, d := range domains {
		add := func(k kind, name, typ, value string, flags uint8, tag string) {
			p.records = append(p.records, planned{
				Record: Record{Name: name, Type: typ, Value: value, Flags: flags, Tag: tag, TTL: TTL},
				kind:   k, domain: d.Name,
			})
		}
		aliasAt, txtAt, caaAt, tag := d.Name, prefix+"."+d.Name, d.Name, dnsread.TagIssue
		if d.Wildcard() {
			txtAt, caaAt, tag = prefix+"-wildcard."+d.Base(), d.Base(), dnsread.TagIssueWild
			if zone != "" {
				// Delegated, *.B and B both lead to B.<zone>, which
				// carries the alias and the issuewild CAA.
				aliasAt = d.Base()
			}
		}
		if gateway != "" {
			add(kindAlias, in(aliasAt), TypeCNAME, fqdn(gateway), 0, "")
			operator(d.Name, aliasAt)
		}
		if txt != "" {
			add(kindRouting, in(txtAt), TypeTXT, txt, 0, "")
			operator(txtAt, txtAt)
		}
		if caa != nil {
			add(kindCAA, in(caaAt), TypeCAA, caa.Value(), 0, tag)
			if d.Wildcard() || gateway == "" {
				// RFC 8659 looks for *.B's CAA at B: B must lead there
				// too.
				operator(caaAt, caaAt)
			}
		}
		challenge := unfqdn(ChallengeName(d.Name, ""))
		operator(challenge, challenge)
		if cfg.Persist != nil {
			name := unfqdn(dnsread.PersistName(d.Name))
			add(kindPersist, in(name), TypeTXT, persistFor(cfg.Persist, domains, d.Base()).Value(), 0, "")
			operator(name, name)
		}
	}
	p.records = dedupPlanned(p.records)
	p.operator = dedupRecords(p.operator)
	if err := p.check(); err != nil {
		return nil, err
	}
	return p, nil
}

// persistFor is the dns-persist-01 authorisation for base: with
// policy=wildcard when a wildcard of it is served.
func persistFor(p *dnsread.Persist, domains []Domain, base string) dnsread.Persist {
	out := dnsread.Persist{Issuer: p.Issuer, AccountURI: p.AccountURI}
	for _, d := range domains {
		out.Wildcard = out.Wildcard || d.Wildcard() && d.Base() == base
	}
	return out
}

func checkAppID(id string) error {
	if len(id) > 200 {
		return fmt.Errorf("app id %q is longer than 200 characters", id[:32]+"...")
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' || c == '"' || c == '\\' || c == ':' {
			return fmt.Errorf("app id %q has character %q (want the dstack app_id, hex)", id, c)
		}
	}
	return nil
}

func dedupPlanned(in []planned) []planned {
	var out []planned
	for _, r := range in {
		dup := false
		for _, o := range out {
			if o.same(r.Record) {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, r)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func dedupRecords(in []Record) []Record {
	var out []Record
	for _, r := range in {
		dup := false
		for _, o := range out {
			if o.same(r) {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, r)
		}
	}
	return out
}

// check rejects plans that contradict themselves: two values for a name that
// takes one, and generated names that are not valid DNS names.
func (p *Plan) check() error {
	for i, a := range p.records {
		if err := checkHostname(strings.TrimPrefix(unfqdn(a.Name), "*."), true); err != nil {
			return fmt.Errorf("record name %s for %s is not a valid DNS name: %w", a.Name, a.domain, err)
		}
		for _, b := range p.records[i+1:] {
			if a.Name != b.Name {
				continue
			}
			switch {
			case a.kind == kindAlias && b.kind == kindRouting, a.kind == kindRouting && b.kind == kindAlias:
				return fmt.Errorf("domains %s and %s need a CNAME and a TXT record at the same name %s: a CNAME must be alone at its name", a.domain, b.domain, a.Name)
			case a.kind == b.kind && a.kind != kindCAA, a.kind == kindCAA && b.kind == kindCAA && a.Tag == b.Tag:
				return fmt.Errorf("domains %s and %s need different %s records at %s (%s and %s)", a.domain, b.domain, a.Type, a.Name, a.Value, b.Value)
			}
		}
	}
	return nil
}

// MissingOperatorRecords returns the records of plan.Operator() that DNS, asked
// through r (nil: the system's resolvers), does not show yet: a CNAME at the name with exactly the expected
// target. In delegation mode the ingress cannot create them itself; the
// caller prints them, or waits for them.
func MissingOperatorRecords(ctx context.Context, r *dnsread.Resolver, plan *Plan) ([]Record, error) {
	var missing []Record
	for _, rec := range plan.operator {
		m, err := r.Query(ctx, rec.Name, dns.TypeCNAME)
		if err != nil {
			return nil, fmt.Errorf("checking %s: %w", rec, err)
		}
		ok := false
		for _, rr := range m.Answer {
			if c, isC := rr.(*dns.CNAME); isC && fqdn(c.Hdr.Name) == rec.Name && fqdn(c.Target) == rec.Value {
				ok = true
			}
		}
		if !ok {
			missing = append(missing, rec)
		}
	}
	return missing, nil
}

// Described is a record with what it is for, for an operator creating it.
type Described struct {
	Record
	Note string
	// Exact: a CNAME that must be exactly this one (the operator's
	// delegation CNAMEs); a gateway alias may be flattened.
	Exact bool
}

// Described lists every record the deployment needs, the operator's
// delegation CNAMEs first.
func (p *Plan) Described() []Described {
	var out []Described
	for _, r := range p.operator {
		out = append(out, Described{Record: r, Note: "leads the name into the delegation zone " + unfqdn(p.delegation), Exact: true})
	}
	for _, r := range p.records {
		var note string
		switch r.kind {
		case kindAlias:
			note = "points " + r.domain + " at the dstack gateway"
		case kindRouting:
			note = "tells the gateway which app serves " + r.domain
		case kindCAA:
			note = "pins issuance for " + r.domain + " to this TEE's ACME account"
		case kindPersist:
			note = "authorises this TEE's ACME account for " + r.domain + " (dns-persist-01: no record per order)"
		}
		out = append(out, Described{Record: r.Record, Note: note})
	}
	return out
}
