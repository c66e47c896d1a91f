package dnsread

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// DefaultQueryTimeout bounds one DNS query to one server when no timeout is
// configured.
const DefaultQueryTimeout = 5 * time.Second

// Resolver says where this package sends DNS queries: CNAME, SOA and NS
// lookups, propagation checks and CAA reads.
type Resolver struct {
	// Servers are "host:port" addresses of recursive resolvers (in tests,
	// the authoritative test server), or https:// URLs of DNS-over-HTTPS
	// resolvers (RFC 8484). A server without a port gets 53.
	// Empty: the nameservers of /etc/resolv.conf.
	Servers []string
	// Timeout bounds one query to one server. Zero: DefaultQueryTimeout.
	Timeout time.Duration
	// HTTPClient carries DNS-over-HTTPS queries. Nil: a client with the
	// system's roots.
	HTTPClient *http.Client
}

func (r *Resolver) QueryTimeout() time.Duration {
	if r == nil || r.Timeout <= 0 {
		return DefaultQueryTimeout
	}
	return r.Timeout
}

func (r *Resolver) servers() ([]string, error) {
	if r != nil && len(r.Servers) > 0 {
		out := make([]string, 0, len(r.Servers))
		for _, s := range r.Servers {
			if !strings.HasPrefix(s, "https://") {
				s = WithPort(s)
			}
			out = append(out, s)
		}
		return out, nil
	}
	conf, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil {
		return nil, fmt.Errorf("no DNS resolvers configured and /etc/resolv.conf unreadable: %w", err)
	}
	var out []string
	for _, s := range conf.Servers {
		out = append(out, net.JoinHostPort(s, conf.Port))
	}
	if len(out) == 0 {
		return nil, errors.New("no DNS resolvers configured and none in /etc/resolv.conf")
	}
	return out, nil
}

func WithPort(s string) string {
	if _, _, err := net.SplitHostPort(s); err == nil {
		return s
	}
	return net.JoinHostPort(strings.Trim(s, "[]"), "53")
}

// Query asks the resolvers, in order, for name and qtype with recursion
// desired. The first answer that is NOERROR or NXDOMAIN is returned; SERVFAIL,
// REFUSED and network errors move on to the next server, and the last of them
// is returned if no server answers.
func (r *Resolver) Query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	servers, err := r.servers()
	if err != nil {
		return nil, err
	}
	var last *dns.Msg
	var lastErr error
	for _, s := range servers {
		var m *dns.Msg
		if strings.HasPrefix(s, "https://") {
			m, err = queryDoH(ctx, r.httpClient(), s, name, qtype, r.QueryTimeout())
		} else {
			m, err = QueryServer(ctx, s, name, qtype, true, r.QueryTimeout())
		}
		if err != nil {
			lastErr = err
			continue
		}
		if m.Rcode == dns.RcodeSuccess || m.Rcode == dns.RcodeNameError {
			return m, nil
		}
		last, lastErr = m, fmt.Errorf("%s %s from %s: %s", dns.TypeToString[qtype], FQDN(name), s, dns.RcodeToString[m.Rcode])
	}
	if last != nil {
		return last, lastErr
	}
	return nil, lastErr
}

// QueryServer sends one query to one server over UDP, retrying over TCP when
// the answer is truncated.
func QueryServer(ctx context.Context, server, name string, qtype uint16, recurse bool, timeout time.Duration) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(FQDN(name), qtype)
	m.RecursionDesired = recurse
	m.SetEdns0(1232, false)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := &dns.Client{Net: "udp", Timeout: timeout}
	in, _, err := c.ExchangeContext(ctx, m, server)
	if err == nil && in.Truncated {
		c.Net = "tcp"
		in, _, err = c.ExchangeContext(ctx, m, server)
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s to %s: %w", dns.TypeToString[qtype], FQDN(name), server, err)
	}
	if in.Id != m.Id {
		return nil, fmt.Errorf("%s %s to %s: answer id mismatch", dns.TypeToString[qtype], FQDN(name), server)
	}
	return in, nil
}

// maxCNAMEHops bounds CNAME following, as resolvers do.
const maxCNAMEHops = 16

// FollowCNAME follows CNAMEs from name and returns where they end (name itself
// when it has none) and the chain of targets.
func (r *Resolver) FollowCNAME(ctx context.Context, name string) (string, []string, error) {
	cur := FQDN(name)
	seen := map[string]bool{cur: true}
	var chain []string
	for range maxCNAMEHops {
		m, err := r.Query(ctx, cur, dns.TypeCNAME)
		if err != nil && m != nil && m.Rcode == dns.RcodeRefused && len(chain) > 0 {
			// An authoritative server asked directly knows nothing
			// past its zones: the chain ends at the last name it gave.
			return cur, chain, nil
		}
		if err != nil {
			return "", chain, fmt.Errorf("looking up CNAME of %s: %w", cur, err)
		}
		next := ""
		for _, rr := range m.Answer {
			if c, ok := rr.(*dns.CNAME); ok && FQDN(c.Hdr.Name) == cur {
				next = FQDN(c.Target)
			}
		}
		if next == "" {
			return cur, chain, nil
		}
		if seen[next] {
			return "", chain, fmt.Errorf("CNAME loop at %s", next)
		}
		seen[next] = true
		chain = append(chain, next)
		cur = next
	}
	return "", chain, fmt.Errorf("more than %d CNAMEs from %s", maxCNAMEHops, FQDN(name))
}

// ZoneBySOA finds the zone that holds name: the owner of the SOA in the
// answer (at an apex) or in the authority section (below it), climbing one
// label at a time.
func (r *Resolver) ZoneBySOA(ctx context.Context, name string) (string, error) {
	for cur := FQDN(name); cur != "."; cur = parentName(cur) {
		m, err := r.Query(ctx, cur, dns.TypeSOA)
		if err != nil {
			return "", fmt.Errorf("finding the zone of %s: %w", FQDN(name), err)
		}
		for _, rr := range append(append([]dns.RR{}, m.Answer...), m.Ns...) {
			if soa, ok := rr.(*dns.SOA); ok {
				if z := FQDN(soa.Hdr.Name); InZone(name, z) {
					return z, nil
				}
			}
		}
	}
	return "", fmt.Errorf("finding the zone of %s: no SOA record found", FQDN(name))
}

// AuthoritativeServers returns "ip:53" for every address of every NS of zone.
func (r *Resolver) AuthoritativeServers(ctx context.Context, zone string) ([]string, error) {
	m, err := r.Query(ctx, zone, dns.TypeNS)
	if err != nil {
		return nil, fmt.Errorf("looking up NS of %s: %w", FQDN(zone), err)
	}
	var hosts []string
	for _, rr := range m.Answer {
		if ns, ok := rr.(*dns.NS); ok && FQDN(ns.Hdr.Name) == FQDN(zone) {
			hosts = append(hosts, FQDN(ns.Ns))
		}
	}
	if len(hosts) == 0 {
		return nil, fmt.Errorf("looking up NS of %s: none found", FQDN(zone))
	}
	var out []string
	for _, h := range hosts {
		n := 0
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
			a, err := r.Query(ctx, h, qt)
			if err != nil {
				continue
			}
			for _, rr := range a.Answer {
				switch v := rr.(type) {
				case *dns.A:
					out = append(out, net.JoinHostPort(v.A.String(), "53"))
					n++
				case *dns.AAAA:
					out = append(out, net.JoinHostPort(v.AAAA.String(), "53"))
					n++
				}
			}
		}
		if n == 0 {
			return nil, fmt.Errorf("looking up the address of %s, a name server of %s: none found", h, FQDN(zone))
		}
	}
	return out, nil
}

// parentName returns name without its first label, "." for a TLD.
func parentName(name string) string {
	name = FQDN(name)
	i := strings.IndexByte(name, '.')
	if i < 0 || i == len(name)-1 {
		return "."
	}
	return name[i+1:]
}
