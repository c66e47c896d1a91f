package dnscaa

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/libdns/libdns"
)

// TTL is the TTL of every record this package writes: short, so that a
// changed app id, account or challenge is visible within a minute.
const TTL = 60 * time.Second

// Record types this package writes.
const (
	TypeCNAME = "CNAME"
	TypeTXT   = "TXT"
	TypeCAA   = "CAA"
)

// Record is one DNS record in the provider-independent form this package plans
// with and compares: absolute lowercase names with the trailing dot, TXT text
// without quotes, CNAME targets as absolute names.
type Record struct {
	// Name is the owner, e.g. "app.example.com.".
	Name string `json:"name"`
	// Type is "CNAME", "TXT", "CAA", or whatever type a provider returned.
	Type string `json:"type"`
	// Value is the CNAME target ("gw.example.net."), the TXT text, the CAA
	// value (`letsencrypt.org;accounturi=...`), or the presentation-format
	// data of other types.
	Value string `json:"value"`
	// Flags and Tag are set for CAA only.
	Flags uint8  `json:"flags,omitempty"`
	Tag   string `json:"tag,omitempty"`
	// TTL is the record's TTL. It is not part of a record's identity: a
	// provider may clamp it, and rewriting a record only to change its TTL
	// is not worth a window of change.
	TTL time.Duration `json:"ttl"`

	// orig is the record as the provider returned it, passed back unchanged
	// when deleting so the provider matches it exactly (namecheap and linode
	// compare the TTL, cloudflare the content).
	orig libdns.Record
}

// Data is the record data in zone-file presentation form.
func (r Record) Data() string {
	switch r.Type {
	case TypeTXT:
		return strconv.Quote(r.Value)
	case TypeCAA:
		return fmt.Sprintf("%d %s %s", r.Flags, r.Tag, strconv.Quote(r.Value))
	}
	return r.Value
}

// String is the record as one zone-file line.
func (r Record) String() string {
	return fmt.Sprintf("%s %d IN %s %s", r.Name, int(r.TTL/time.Second), r.Type, r.Data())
}

// same reports whether r and o are the same record, TTL aside.
func (r Record) same(o Record) bool {
	return r.Name == o.Name && r.Type == o.Type && r.Value == o.Value &&
		(r.Type != TypeCAA || (r.Flags == o.Flags && r.Tag == o.Tag))
}

// fromLibdns converts a record a provider returned for zone. Providers return
// both value and pointer types (libdns/namecheap returns pointers), so both
// are handled.
func fromLibdns(rec libdns.Record, zone string) Record {
	switch v := rec.(type) {
	case *libdns.CNAME:
		return fromLibdns(*v, zone).withOrig(rec)
	case *libdns.TXT:
		return fromLibdns(*v, zone).withOrig(rec)
	case *libdns.CAA:
		return fromLibdns(*v, zone).withOrig(rec)
	case *libdns.RR:
		return fromLibdns(*v, zone).withOrig(rec)
	case libdns.CNAME:
		return Record{Name: absoluteName(v.Name, zone), Type: TypeCNAME, Value: fqdn(v.Target), TTL: v.TTL, orig: rec}
	case libdns.TXT:
		return Record{Name: absoluteName(v.Name, zone), Type: TypeTXT, Value: v.Text, TTL: v.TTL, orig: rec}
	case libdns.CAA:
		return Record{
			Name: absoluteName(v.Name, zone), Type: TypeCAA, TTL: v.TTL, orig: rec,
			Flags: v.Flags, Tag: strings.ToLower(v.Tag), Value: unquoteCAA(v.Value),
		}
	case libdns.RR:
		if parsed, err := v.Parse(); err == nil {
			if _, generic := parsed.(libdns.RR); !generic {
				return fromLibdns(parsed, zone).withOrig(rec)
			}
		}
	}
	rr := rec.RR()
	return Record{Name: absoluteName(rr.Name, zone), Type: strings.ToUpper(rr.Type), Value: rr.Data, TTL: rr.TTL, orig: rec}
}

func (r Record) withOrig(orig libdns.Record) Record {
	r.orig = orig
	return r
}

// unquoteCAA removes the quotes some providers leave around a CAA value
// (libdns/namecheap splits "0 issue \"ca.example\"" on spaces and keeps them).
func unquoteCAA(v string) string {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		if u, err := strconv.Unquote(v); err == nil {
			return u
		}
		return v[1 : len(v)-1]
	}
	return v
}

// toLibdns builds the libdns record to write r into zone.
func (r Record) toLibdns(zone string) libdns.Record {
	name := relativeName(r.Name, zone)
	switch r.Type {
	case TypeCNAME:
		return libdns.CNAME{Name: name, TTL: r.TTL, Target: r.Value}
	case TypeTXT:
		return libdns.TXT{Name: name, TTL: r.TTL, Text: r.Value}
	case TypeCAA:
		return libdns.CAA{Name: name, TTL: r.TTL, Flags: r.Flags, Tag: r.Tag, Value: r.Value}
	}
	return libdns.RR{Name: name, TTL: r.TTL, Type: r.Type, Data: r.Value}
}

// deletable returns what to pass to DeleteRecords to remove r: the record as
// the provider returned it when known.
func (r Record) deletable(zone string) libdns.Record {
	if r.orig != nil {
		return r.orig
	}
	return r.toLibdns(zone)
}
