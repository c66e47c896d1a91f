package dnscaa

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/libdns/libdns"

	"github.com/tee-ingress/tee-ingress/dnsread"
	"github.com/tee-ingress/tee-ingress/internal/fielderr"
)

// FindZone returns the zone, as an FQDN with the trailing dot, in which the
// provider holds name:
//   - explicit (DNS_ZONE), when given, which must be name or a parent of it;
//   - else the longest of the provider's zones (libdns.ZoneLister) that
//     contains name;
//   - else, for a provider that cannot list zones, the owner of the SOA that
//     DNS returns for name, through r.
//
// The zone is handed to the provider through Client, which converts it to the
// form that provider expects.
func FindZone(ctx context.Context, p Provider, name, explicit string, r *dnsread.Resolver) (string, error) {
	return (&zoneFinder{p: p, r: r}).find(ctx, name, explicit)
}

// zoneFinder is FindZone with the provider's zone list read once.
type zoneFinder struct {
	p      Provider
	r      *dnsread.Resolver
	listed bool
	zones  []string // nil with listed: the provider cannot list zones
}

func (f *zoneFinder) find(ctx context.Context, name, explicit string) (string, error) {
	if explicit != "" {
		z, err := parseHostname("the DNS zone", explicit, true)
		if err != nil {
			return "", &fielderr.Error{Field: "Zone", Value: explicit, Err: err}
		}
		if !inZone(name, z) {
			return "", &fielderr.Error{Field: "Zone", Value: z, Problem: "does not contain " + unfqdn(name),
				Accepted: "the zone that holds the name, or none to discover it"}
		}
		return fqdn(z), nil
	}
	if !f.listed {
		if zl, ok := f.p.(libdns.ZoneLister); ok {
			zones, err := zl.ListZones(ctx)
			switch {
			case err == nil:
				f.zones = []string{}
				for _, z := range zones {
					f.zones = append(f.zones, fqdn(z.Name))
				}
			case !errors.Is(err, errors.ErrUnsupported):
				return "", fmt.Errorf("finding the zone of %s: %w", unfqdn(name), err)
			}
		}
		f.listed = true
	}
	if f.zones != nil {
		best := ""
		for _, z := range f.zones {
			if inZone(name, z) && len(z) > len(best) {
				best = z
			}
		}
		if best == "" {
			names := make([]string, 0, len(f.zones))
			for _, z := range f.zones {
				names = append(names, unfqdn(z))
			}
			sort.Strings(names)
			return "", fmt.Errorf("no zone of the DNS provider contains %s (zones: %s): add the domain to the provider account, or check the token's zone permissions",
				unfqdn(name), strings.Join(names, ", "))
		}
		return best, nil
	}
	z, err := f.r.ZoneBySOA(ctx, name)
	if err != nil {
		return "", &fielderr.Error{Field: "Zone", Problem: "the zone could not be discovered", Accepted: "the zone that holds the name", Err: err}
	}
	return z, nil
}
