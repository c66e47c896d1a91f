package cfemu

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// autoTTL is the TTL Cloudflare serves for records whose API ttl is 1
// ("automatic").
const autoTTL = 300

// record is the emulator's view of one record in the store: what Cloudflare
// keeps beside the DNS data (ID, API content as sent, "automatic" TTL, proxy
// flag, comment, tags, timestamps).
type record struct {
	id       string
	zone     string // canonical zone FQDN, with the trailing dot
	rr       dns.RR
	content  string // API content as written, "" = render from rr
	auto     bool
	proxied  bool
	comment  *string
	tags     []string
	created  time.Time
	modified time.Time
}

// recordKey identifies a stored record by owner, type and rdata (not TTL), the
// way dns.IsDuplicate does.
func recordKey(rr dns.RR) string {
	h := rr.Header()
	return dns.CanonicalName(h.Name) + "\t" + dns.TypeToString[h.Rrtype] + "\t" + rdata(rr)
}

func rdata(rr dns.RR) string {
	return strings.TrimPrefix(rr.String(), rr.Header().String())
}

// recordInput is a POST, PUT or PATCH body. Pointers tell PATCH which fields
// were sent.
type recordInput struct {
	Type     *string     `json:"type"`
	Name     *string     `json:"name"`
	Content  *string     `json:"content"`
	TTL      *int        `json:"ttl"`
	Priority *uint16     `json:"priority"`
	Proxied  *bool       `json:"proxied"`
	Comment  *string     `json:"comment"`
	Tags     []string    `json:"tags"`
	Data     *recordData `json:"data"`
}

// recordData is the structured "data" object, used here for CAA and SRV.
// libdns/cloudflare sends it on every request (its Tag has no omitempty), so
// it is ignored for other types.
type recordData struct {
	Flags    *int    `json:"flags,omitempty"`
	Tag      string  `json:"tag,omitempty"`
	Value    string  `json:"value,omitempty"`
	Priority *uint16 `json:"priority,omitempty"`
	Weight   uint16  `json:"weight,omitempty"`
	Port     uint16  `json:"port,omitempty"`
	Target   string  `json:"target,omitempty"`
}

// apiRecord is a DNS record as the API returns it.
type apiRecord struct {
	ID         string         `json:"id"`
	ZoneID     string         `json:"zone_id"`
	ZoneName   string         `json:"zone_name"`
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Content    string         `json:"content"`
	Priority   *uint16        `json:"priority,omitempty"`
	Proxiable  bool           `json:"proxiable"`
	Proxied    bool           `json:"proxied"`
	TTL        int            `json:"ttl"`
	Data       *recordData    `json:"data,omitempty"`
	Settings   map[string]any `json:"settings"`
	Meta       apiRecordMeta  `json:"meta"`
	Comment    *string        `json:"comment"`
	Tags       []string       `json:"tags"`
	CreatedOn  time.Time      `json:"created_on"`
	ModifiedOn time.Time      `json:"modified_on"`
}

type apiRecordMeta struct {
	AutoAdded           bool `json:"auto_added"`
	ManagedByApps       bool `json:"managed_by_apps"`
	ManagedByArgoTunnel bool `json:"managed_by_argo_tunnel"`
}

// spec is a fully specified record write, before it becomes a dns.RR.
type spec struct {
	typ      string
	name     string // as sent: relative, "@" or FQDN
	content  *string
	ttl      int
	priority *uint16
	proxied  bool
	comment  *string
	tags     []string
	data     *recordData
}

func proxiable(typ string) bool { return typ == "A" || typ == "AAAA" || typ == "CNAME" }

// view renders rec as the API returns it.
func view(rec *record, zoneID string) apiRecord {
	h := rec.rr.Header()
	typ := dns.TypeToString[h.Rrtype]
	out := apiRecord{
		ID:         rec.id,
		ZoneID:     zoneID,
		ZoneName:   strings.TrimSuffix(rec.zone, "."),
		Name:       strings.TrimSuffix(h.Name, "."),
		Type:       typ,
		Content:    rec.content,
		Proxiable:  proxiable(typ),
		Proxied:    rec.proxied,
		TTL:        int(h.Ttl),
		Settings:   map[string]any{},
		Comment:    rec.comment,
		Tags:       rec.tags,
		CreatedOn:  rec.created,
		ModifiedOn: rec.modified,
	}
	if out.Tags == nil {
		out.Tags = []string{}
	}
	if rec.auto && h.Ttl == autoTTL {
		out.TTL = 1
	}
	if out.Content == "" {
		out.Content = renderContent(rec.rr)
	}
	switch rr := rec.rr.(type) {
	case *dns.MX:
		p := rr.Preference
		out.Priority = &p
	case *dns.CAA:
		f := int(rr.Flag)
		out.Data = &recordData{Flags: &f, Tag: rr.Tag, Value: rr.Value}
	case *dns.SRV:
		p := rr.Priority
		out.Priority = &p
		out.Data = &recordData{Priority: &p, Weight: rr.Weight, Port: rr.Port, Target: strings.TrimSuffix(rr.Target, ".")}
	}
	return out
}

// renderContent is the content Cloudflare shows for a record it did not get
// through the API: targets without the trailing dot, TXT as quoted strings,
// CAA as `0 issue "value"`, SRV as "weight port target".
func renderContent(rr dns.RR) string {
	switch rr := rr.(type) {
	case *dns.A:
		return rr.A.String()
	case *dns.AAAA:
		return rr.AAAA.String()
	case *dns.CNAME:
		return strings.TrimSuffix(rr.Target, ".")
	case *dns.NS:
		return strings.TrimSuffix(rr.Ns, ".")
	case *dns.MX:
		return strings.TrimSuffix(rr.Mx, ".")
	case *dns.SRV:
		return fmt.Sprintf("%d %d %s", rr.Weight, rr.Port, strings.TrimSuffix(rr.Target, "."))
	default:
		return rdata(rr)
	}
}

// apiName turns a name as sent ("@", relative or absolute, any case, with or
// without the trailing dot) into the record's FQDN without the trailing dot,
// the way Cloudflare completes names inside a zone.
func apiName(name, zone string) (string, *apiError) {
	zone = strings.TrimSuffix(zone, ".")
	n := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(name), "."))
	switch {
	case n == "" && strings.TrimSpace(name) == "":
		return "", errBadRequest(9000, "DNS name is invalid: name is required (use @ for the zone apex).")
	case n == "@":
		n = zone
	case n == zone || strings.HasSuffix(n, "."+zone):
	default:
		n += "." + zone
	}
	for i, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 {
			return "", errBadRequest(9000, fmt.Sprintf("DNS name is invalid: %q has an empty or over-long label.", name))
		}
		if label == "*" && i == 0 {
			continue
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", errBadRequest(9000, fmt.Sprintf("DNS name is invalid: %q contains %q.", name, c))
			}
		}
	}
	if len(n) > 253 {
		return "", errBadRequest(9000, "DNS name is invalid: longer than 253 characters.")
	}
	return n, nil
}

// build turns a write into the dns.RR to store and the record state around it.
func build(zone string, s spec) (*record, *apiError) {
	name, aerr := apiName(s.name, zone)
	if aerr != nil {
		return nil, aerr
	}
	typ := strings.ToUpper(strings.TrimSpace(s.typ))
	if typ == "" {
		return nil, errBadRequest(9020, "Invalid DNS record type: type is required.")
	}
	rrtype, ok := dns.StringToType[typ]
	if !ok || typ == "SOA" || typ == "ANY" || typ == "OPT" || typ == "AXFR" || typ == "IXFR" {
		return nil, errBadRequest(9020, fmt.Sprintf("Invalid DNS record type %q.", typ))
	}
	rec := &record{proxied: s.proxied, comment: s.comment, tags: s.tags}
	ttl := uint32(s.ttl)
	switch {
	case s.ttl == 0 || s.ttl == 1:
		rec.auto, ttl = true, autoTTL
	case s.ttl < 60 || s.ttl > 86400:
		return nil, errBadRequest(9021, fmt.Sprintf("Invalid TTL %d. Must be between 60 and 86400 seconds, or 1 for Automatic.", s.ttl))
	}
	if s.proxied && !proxiable(typ) {
		return nil, errBadRequest(9004, fmt.Sprintf("This record type cannot be proxied: %s.", typ))
	}
	hdr := dns.RR_Header{Name: name + ".", Rrtype: rrtype, Class: dns.ClassINET, Ttl: ttl}
	content := ""
	if s.content != nil {
		content = strings.TrimSpace(*s.content)
	}
	needContent := func() *apiError {
		if content == "" {
			return errBadRequest(9006, fmt.Sprintf("Content for %s record is invalid: content is required.", typ))
		}
		return nil
	}

	switch typ {
	case "A", "AAAA":
		ip, err := netip.ParseAddr(content)
		if err != nil || (typ == "A") != ip.Is4() || ip.Zone() != "" {
			if typ == "A" {
				return nil, errBadRequest(9005, fmt.Sprintf("Content for A record must be a valid IPv4 address, got %q.", content))
			}
			return nil, errBadRequest(9006, fmt.Sprintf("Content for AAAA record must be a valid IPv6 address, got %q.", content))
		}
		if typ == "A" {
			rec.rr = &dns.A{Hdr: hdr, A: ip.AsSlice()}
		} else {
			rec.rr = &dns.AAAA{Hdr: hdr, AAAA: ip.AsSlice()}
		}
		rec.content = ip.String()
	case "CNAME", "NS", "MX":
		target := strings.TrimSuffix(content, ".")
		if _, err := netip.ParseAddr(target); err == nil || target == "" || strings.ContainsAny(target, " \t\"") {
			return nil, errBadRequest(9007, fmt.Sprintf("Content for %s record is invalid: %q is not a host name.", typ, content))
		}
		if _, ok := dns.IsDomainName(target); !ok {
			return nil, errBadRequest(9007, fmt.Sprintf("Content for %s record is invalid: %q is not a host name.", typ, content))
		}
		fq := dns.Fqdn(target)
		switch typ {
		case "CNAME":
			rec.rr = &dns.CNAME{Hdr: hdr, Target: fq}
		case "NS":
			rec.rr = &dns.NS{Hdr: hdr, Ns: fq}
		case "MX":
			var pref uint16 // libdns/cloudflare omits a zero priority (omitempty)
			if s.priority != nil {
				pref = *s.priority
			}
			rec.rr = &dns.MX{Hdr: hdr, Preference: pref, Mx: fq}
		}
		rec.content = target
	case "TXT":
		if aerr := needContent(); aerr != nil {
			return nil, aerr
		}
		txt, aerr := parseTXT(content)
		if aerr != nil {
			return nil, aerr
		}
		rec.rr = &dns.TXT{Hdr: hdr, Txt: txt}
		rec.content = content // Cloudflare keeps TXT content exactly as sent, quotes included
	case "CAA":
		caa := &dns.CAA{Hdr: hdr}
		if s.data != nil && s.data.Tag != "" {
			if s.data.Flags != nil {
				if *s.data.Flags < 0 || *s.data.Flags > 255 {
					return nil, errBadRequest(1004, fmt.Sprintf("DNS Validation Error: CAA flags %d out of range 0-255.", *s.data.Flags))
				}
				caa.Flag = uint8(*s.data.Flags)
			}
			caa.Tag, caa.Value = s.data.Tag, s.data.Value
		} else {
			if aerr := needContent(); aerr != nil {
				return nil, aerr
			}
			rr, err := dns.NewRR(hdr.Name + " 300 IN CAA " + content)
			if err != nil || rr == nil {
				return nil, errBadRequest(1004, fmt.Sprintf("DNS Validation Error: CAA content %q is not `<flags> <tag> \"<value>\"`.", content))
			}
			c := rr.(*dns.CAA)
			caa.Flag, caa.Tag, caa.Value = c.Flag, c.Tag, c.Value
		}
		switch caa.Tag {
		case "issue", "issuewild", "iodef", "issuemail", "issuevmc":
		default:
			return nil, errBadRequest(1004, fmt.Sprintf("DNS Validation Error: CAA tag %q is not one of issue, issuewild, iodef, issuemail, issuevmc.", caa.Tag))
		}
		rec.rr = caa
		rec.content = rdata(caa)
	case "SRV":
		if s.data == nil || s.data.Target == "" {
			return nil, errBadRequest(1004, "DNS Validation Error: SRV records need data.priority, data.weight, data.port and data.target.")
		}
		srv := &dns.SRV{Hdr: hdr, Weight: s.data.Weight, Port: s.data.Port, Target: dns.Fqdn(s.data.Target)}
		switch {
		case s.data.Priority != nil:
			srv.Priority = *s.data.Priority
		case s.priority != nil:
			srv.Priority = *s.priority
		}
		rec.rr = srv
		rec.content = renderContent(srv)
	default:
		if aerr := needContent(); aerr != nil {
			return nil, aerr
		}
		rr, err := dns.NewRR(fmt.Sprintf("%s %d IN %s %s", hdr.Name, ttl, typ, content))
		if err != nil || rr == nil || rr.Header().Rrtype != rrtype {
			return nil, errBadRequest(1004, fmt.Sprintf("DNS Validation Error: content %q is not valid %s data.", content, typ))
		}
		rec.rr = rr
		rec.content = rdata(rr)
	}
	return rec, nil
}

// parseTXT reads TXT content the way Cloudflare serves it: quoted content is
// zone-file character-strings (`"a" "b"` is two strings, the quotes are not
// part of the data); anything else is one string of exactly those bytes,
// split every 255. The result is in miekg/dns presentation form (escaped).
func parseTXT(content string) ([]string, *apiError) {
	if strings.ContainsAny(content, "\n\r") {
		return nil, errBadRequest(9009, "Content for TXT record is invalid: it contains a line break.")
	}
	if strings.HasPrefix(content, `"`) {
		if rr, err := dns.NewRR("txt.invalid. 300 IN TXT " + content); err == nil && rr != nil {
			if t, ok := rr.(*dns.TXT); ok && len(t.Txt) > 0 {
				return t.Txt, nil
			}
		}
	}
	// dns.TXT holds strings in presentation form, so the raw bytes are
	// escaped after splitting.
	esc := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	var out []string
	for len(content) > 255 {
		out = append(out, esc.Replace(content[:255]))
		content = content[255:]
	}
	return append(out, esc.Replace(content)), nil
}

// specFrom is the write that would recreate rec, the base a PATCH changes.
func specFrom(rec *record) spec {
	v := view(rec, "")
	c := v.Content
	s := spec{typ: v.Type, name: v.Name, content: &c, ttl: v.TTL, priority: v.Priority,
		proxied: v.Proxied, comment: v.Comment, tags: v.Tags, data: v.Data}
	return s
}

// apply lays the fields present in in over s.
func (s spec) apply(in recordInput) spec {
	if in.Type != nil {
		s.typ = *in.Type
	}
	if in.Name != nil {
		s.name = *in.Name
	}
	if in.Content != nil {
		c := *in.Content
		s.content, s.data = &c, nil
	}
	if in.Data != nil {
		s.data = in.Data
	}
	if in.TTL != nil {
		s.ttl = *in.TTL
	}
	if in.Priority != nil {
		s.priority = in.Priority
	}
	if in.Proxied != nil {
		s.proxied = *in.Proxied
	}
	if in.Comment != nil {
		s.comment = in.Comment
	}
	if in.Tags != nil {
		s.tags = in.Tags
	}
	return s
}

// matchString applies one of Cloudflare's string filters, which compare
// case-insensitively.
func matchString(op, have, want string) bool {
	have, want = strings.ToLower(have), strings.ToLower(want)
	switch op {
	case "exact":
		return have == want
	case "contains":
		return strings.Contains(have, want)
	case "startswith":
		return strings.HasPrefix(have, want)
	case "endswith":
		return strings.HasSuffix(have, want)
	}
	return false
}

func atoiDefault(s string, def int) (int, bool) {
	if s == "" {
		return def, true
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, false
	}
	return n, true
}
