package dnscaa

import (
	"context"
	"encoding/base64"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/libdns/cloudflare"
	"github.com/libdns/libdns"
	"github.com/libdns/linode"
	"github.com/libdns/rfc2136"
)

func checkToken(name, v string) error {
	for _, r := range v {
		if r <= ' ' || r == 0x7f {
			return fmt.Errorf("%s contains whitespace or control characters (copy the token again)", name)
		}
	}
	return nil
}

func buildCloudflare(v map[string]string, cfg ProviderConfig, c *Client) (Provider, error) {
	if err := checkToken("CLOUDFLARE_API_TOKEN", v["CLOUDFLARE_API_TOKEN"]); err != nil {
		return nil, err
	}
	p := &cloudflare.Provider{APIToken: v["CLOUDFLARE_API_TOKEN"]}
	if cfg.HTTPClient != nil {
		p.HTTPClient = cfg.HTTPClient
	}
	// libdns/cloudflare looks zones up by name=<zone>; Cloudflare's names
	// have no trailing dot.
	c.dotlessZones = true
	// Cloudflare keeps a CAA beside a CNAME at one name (dstack-ingress
	// relies on this for CAA at a gateway-aliased domain).
	c.cnameSiblings = true
	return p, nil
}

func buildRFC2136(v map[string]string, _ ProviderConfig, _ *Client) (Provider, error) {
	server := v["RFC2136_NAMESERVER"]
	if _, _, err := net.SplitHostPort(server); err != nil {
		server = net.JoinHostPort(strings.Trim(server, "[]"), "53")
	}
	host, port, err := net.SplitHostPort(server)
	if err == nil {
		if _, perr := netip.ParseAddr(host); perr != nil {
			_, err = parseHostname("RFC2136_NAMESERVER", host, true)
		}
	}
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("RFC2136_NAMESERVER=%q is not host or host:port (e.g. 192.0.2.53 or ns1.example.com:5353)", v["RFC2136_NAMESERVER"])
	}
	keyName, err := parseHostname("RFC2136_TSIG_KEY", v["RFC2136_TSIG_KEY"], true)
	if err != nil {
		return nil, err
	}
	if _, err := base64.StdEncoding.DecodeString(v["RFC2136_TSIG_SECRET"]); err != nil {
		return nil, fmt.Errorf("RFC2136_TSIG_SECRET is not base64 (as in a BIND key file's secret)")
	}
	alg := strings.ToLower(v["RFC2136_TSIG_ALGORITHM"])
	if alg == "" {
		alg = "hmac-sha256."
	}
	alg = fqdn(alg)
	switch alg {
	case "hmac-sha1.", "hmac-sha224.", "hmac-sha256.", "hmac-sha384.", "hmac-sha512.":
	default:
		return nil, fmt.Errorf("RFC2136_TSIG_ALGORITHM=%q is not supported (accepted: hmac-sha1, hmac-sha224, hmac-sha256, hmac-sha384, hmac-sha512)", v["RFC2136_TSIG_ALGORITHM"])
	}
	return &rfc2136.Provider{KeyName: keyName, KeyAlg: alg, Key: v["RFC2136_TSIG_SECRET"], Server: server}, nil
}

func buildLinode(v map[string]string, _ ProviderConfig, _ *Client) (Provider, error) {
	if err := checkToken("LINODE_API_TOKEN", v["LINODE_API_TOKEN"]); err != nil {
		return nil, err
	}
	return &linodeAdapter{p: &linode.Provider{APIToken: v["LINODE_API_TOKEN"]}}, nil
}

// linodeAdapter works around libdns/linode v0.5.0:
//   - its one-time initialisation, run inside its first call, replaces the
//     process-wide slog default with a text handler on stdout (which also
//     redirects the standard log package); the adapter restores both when
//     that first call returns. Only logging through those process-wide
//     defaults during the first call is affected; this program logs through
//     injected loggers.
//   - it stores CNAME targets as bare host names: the trailing dot is
//     stripped before writing.
//
// Not worked around: its HTTP client (resty) logs failed requests to stderr
// itself, and AppendRecords skips records it fails to create without an
// error (Client detects the short count).
type linodeAdapter struct {
	p    *linode.Provider
	once sync.Once
}

var (
	_ Provider          = (*linodeAdapter)(nil)
	_ libdns.ZoneLister = (*linodeAdapter)(nil)
)

// linodeInitMu serialises the save and restore of the process-wide loggers
// across linode providers.
var linodeInitMu sync.Mutex

func (a *linodeAdapter) guard(f func()) {
	first := false
	a.once.Do(func() {
		first = true
		linodeInitMu.Lock()
		defer linodeInitMu.Unlock()
		prevSlog := slog.Default()
		prevOut, prevFlags, prevPrefix := log.Writer(), log.Flags(), log.Prefix()
		defer func() {
			slog.SetDefault(prevSlog)
			log.SetOutput(prevOut)
			log.SetFlags(prevFlags)
			log.SetPrefix(prevPrefix)
		}()
		f()
	})
	if !first {
		f()
	}
}

func (a *linodeAdapter) GetRecords(ctx context.Context, zone string) (out []libdns.Record, err error) {
	a.guard(func() { out, err = a.p.GetRecords(ctx, zone) })
	return out, err
}

func (a *linodeAdapter) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) (out []libdns.Record, err error) {
	fixed := make([]libdns.Record, len(recs))
	for i, r := range recs {
		if c, ok := r.(libdns.CNAME); ok {
			c.Target = strings.TrimSuffix(c.Target, ".")
			r = c
		}
		fixed[i] = r
	}
	a.guard(func() { out, err = a.p.AppendRecords(ctx, zone, fixed) })
	return out, err
}

func (a *linodeAdapter) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) (out []libdns.Record, err error) {
	a.guard(func() { out, err = a.p.DeleteRecords(ctx, zone, recs) })
	return out, err
}

func (a *linodeAdapter) ListZones(ctx context.Context) (out []libdns.Zone, err error) {
	a.guard(func() { out, err = a.p.ListZones(ctx) })
	return out, err
}

func checkClientIP(v string) error {
	if _, err := netip.ParseAddr(v); err != nil {
		return fmt.Errorf("NAMECHEAP_CLIENT_IP=%q is not an IP address (want the public IPv4 address whitelisted for API access)", v)
	}
	return nil
}
