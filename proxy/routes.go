package proxy

import (
	"errors"
	"fmt"
	"github.com/tee-ingress/tee-ingress/internal/dnsname"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Target schemes accepted by ParseTarget. In tcp mode "", tcp, http, h2c and grpc
// all mean a plain TCP connection and https a TLS connection; in http mode "" and
// http mean HTTP/1.1, h2c and grpc HTTP/2 with prior knowledge over cleartext,
// https HTTP/1.1 or HTTP/2 over TLS, and tcp is rejected.
const (
	SchemeTCP   = "tcp"
	SchemeHTTP  = "http"
	SchemeHTTPS = "https"
	SchemeH2C   = "h2c"
	SchemeGRPC  = "grpc"
)

const targetForms = "host:port, or scheme://host:port with scheme tcp, http, https, h2c or grpc (port optional for http and https)"

// Target is a backend address.
type Target struct {
	// Scheme is one of the Scheme constants, or "" when the target was given as a
	// bare host:port.
	Scheme string
	// Addr is host:port; the host is a name resolved at each dial, or an IP.
	Addr string
}

// String returns the target in the form ParseTarget accepts.
func (t Target) String() string {
	if t.Scheme == "" {
		return t.Addr
	}
	return t.Scheme + "://" + t.Addr
}

// IsZero reports whether t is the zero Target (no backend).
func (t Target) IsZero() bool { return t == Target{} }

// ParseTarget parses a backend address as TARGET_ENDPOINT and ROUTING_MAP values
// carry it: "host:port" or "scheme://host:port" (see the Scheme constants). A
// single trailing slash is accepted; paths, queries and user info are not.
func ParseTarget(s string) (Target, error) {
	in := s
	s = strings.TrimSpace(s)
	if s == "" {
		return Target{}, fmt.Errorf("empty backend address: want %s", targetForms)
	}
	var t Target
	if scheme, rest, ok := strings.Cut(s, "://"); ok {
		t.Scheme = strings.ToLower(scheme)
		switch t.Scheme {
		case SchemeTCP, SchemeHTTP, SchemeHTTPS, SchemeH2C, SchemeGRPC:
		default:
			return Target{}, fmt.Errorf("backend %q: unknown scheme %q: want %s", in, scheme, targetForms)
		}
		s = strings.TrimSuffix(rest, "/")
	}
	if strings.ContainsAny(s, "/?#@ \t") {
		return Target{}, fmt.Errorf("backend %q: paths, queries, user info and spaces are not supported: want %s", in, targetForms)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) && ae.Err == "missing port in address" && (t.Scheme == SchemeHTTP || t.Scheme == SchemeHTTPS) {
			host, port = s, "80"
			if t.Scheme == SchemeHTTPS {
				port = "443"
			}
			if inner, ok := strings.CutPrefix(host, "["); ok {
				host, ok = strings.CutSuffix(inner, "]")
				if !ok || strings.ContainsAny(host, "[]") {
					return Target{}, fmt.Errorf("backend %q: bad bracketed IPv6 address: want %s", in, targetForms)
				}
			} else if strings.Contains(host, ":") {
				return Target{}, fmt.Errorf("backend %q: %w: want %s", in, err, targetForms)
			}
		} else {
			return Target{}, fmt.Errorf("backend %q: %w: want %s", in, err, targetForms)
		}
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return Target{}, fmt.Errorf("backend %q: port %q is not a number from 1 to 65535", in, port)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return Target{}, fmt.Errorf("backend %q: IPv6 zones are not supported", in)
		}
		host = ip.String()
	} else if err := checkTargetHost(host); err != nil {
		return Target{}, fmt.Errorf("backend %q: %w", in, err)
	}
	t.Addr = net.JoinHostPort(strings.ToLower(host), strconv.Itoa(p))
	return t, nil
}

func checkTargetHost(host string) error {
	if host == "" {
		return errors.New("host is empty")
	}
	if len(host) > 253 {
		return errors.New("host is longer than 253 characters")
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" {
			return fmt.Errorf("host %q has an empty label", host)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("host %q: character %q is not allowed (letters, digits, '-', '_' and '.')", host, c)
			}
		}
	}
	return nil
}

// checkHostPattern validates a normalised route or certificate key with the
// project's one set of name rules (dnsname): a DNS name, or "*." followed by
// one. Underscores and single labels are accepted: backends and test routes
// use names like "_svc.internal" and "localhost".
func checkHostPattern(p string) error {
	return dnsname.Canonical(p, dnsname.Underscores, dnsname.SingleLabel)
}

// Route sends connections for one server name to a backend.
type Route struct {
	// Host is a lower-case domain, exact ("app.example.com") or a wildcard for
	// exactly one label ("*.example.com" matches "a.example.com", not
	// "a.b.example.com" nor "example.com").
	Host   string
	Target Target
}

const routingMapForm = "domain=host:port, one per line or comma-separated, e.g. app.example.com=app:8080 or *.example.com=http://web:80"

// ParseRoutingMap parses ROUTING_MAP: entries domain=target separated by
// newlines or commas; blank lines and text after '#' are ignored. Targets take
// the forms of ParseTarget. A domain may appear only once.
func ParseRoutingMap(s string) ([]Route, error) {
	var routes []Route
	seen := make(map[string]int)
	for i, line := range strings.Split(s, "\n") {
		lineNo := i + 1
		if c := strings.IndexByte(line, '#'); c >= 0 {
			line = line[:c]
		}
		for _, entry := range strings.Split(line, ",") {
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			key, value, ok := strings.Cut(entry, "=")
			if !ok {
				return nil, fmt.Errorf("routing map line %d: entry %q has no '=': want %s", lineNo, entry, routingMapForm)
			}
			host := normalizeName(strings.TrimSpace(key))
			if err := checkHostPattern(host); err != nil {
				return nil, fmt.Errorf("routing map line %d: domain %q: %w", lineNo, strings.TrimSpace(key), err)
			}
			t, err := ParseTarget(value)
			if err != nil {
				return nil, fmt.Errorf("routing map line %d: domain %q: %w", lineNo, host, err)
			}
			if prev, dup := seen[host]; dup {
				return nil, fmt.Errorf("routing map line %d: domain %q already routed on line %d", lineNo, host, prev)
			}
			seen[host] = lineNo
			routes = append(routes, Route{Host: host, Target: t})
		}
	}
	return routes, nil
}

// FormatRoutingMap renders routes in the form ParseRoutingMap reads, one per
// line.
func FormatRoutingMap(routes []Route) string {
	var b strings.Builder
	for _, r := range routes {
		b.WriteString(r.Host)
		b.WriteByte('=')
		b.WriteString(r.Target.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// router maps a server name to its target.
type router struct {
	exact map[string]Target
	wild  map[string]Target // parent of "*.parent"
	def   Target
}

func newRouter(routes []Route, def Target) (*router, error) {
	r := &router{exact: make(map[string]Target), wild: make(map[string]Target), def: def}
	for i, rt := range routes {
		host := normalizeName(rt.Host)
		if err := checkHostPattern(host); err != nil {
			return nil, fmt.Errorf("route %d: host %q: %w", i, rt.Host, err)
		}
		if rt.Target.IsZero() {
			return nil, fmt.Errorf("route %d (%s): target is empty", i, rt.Host)
		}
		m, key := r.exact, host
		if parent, ok := strings.CutPrefix(host, "*."); ok {
			m, key = r.wild, parent
		}
		if _, dup := m[key]; dup {
			return nil, fmt.Errorf("route %d: domain %q is routed twice", i, rt.Host)
		}
		m[key] = rt.Target
	}
	return r, nil
}

// targets returns every distinct target, the default first.
func (r *router) targets() []Target {
	var out []Target
	seen := make(map[Target]bool)
	add := func(t Target) {
		if !t.IsZero() && !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	add(r.def)
	for _, k := range sortedKeys(r.exact) {
		add(r.exact[k])
	}
	for _, k := range sortedKeys(r.wild) {
		add(r.wild[k])
	}
	return out
}

// match returns the target for a server name (SNI or Host without port):
// exact route, then one-label wildcard route, then the default.
func (r *router) match(name string) (Target, bool) {
	name = normalizeName(name)
	if t, ok := r.exact[name]; ok {
		return t, true
	}
	if _, parent, ok := strings.Cut(name, "."); ok {
		if t, ok := r.wild[parent]; ok {
			return t, true
		}
	}
	return r.def, !r.def.IsZero()
}
