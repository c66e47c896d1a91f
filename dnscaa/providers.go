package dnscaa

import (
	"context"
	"encoding/base64"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"strings"

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
	if err != nil || host == "" || port == "" {
		return nil, fmt.Errorf("RFC2136_NAMESERVER=%q is not host or host:port", v["RFC2136_NAMESERVER"])
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
	p := &linode.Provider{APIToken: v["LINODE_API_TOKEN"]}
	initLinode(p)
	return &linodeAdapter{p: p}, nil
}

// initLinode runs libdns/linode's one-time initialisation now, while the
// program is starting, and undoes its side effect: it replaces the
// process-wide slog default with a text handler on stdout (which also
// redirects the standard log package). Only the library's own calls of the
// slog package functions are affected by the restore racing with them, and
// it has made none yet.
func initLinode(p *linode.Provider) {
	prevSlog := slog.Default()
	prevOut, prevFlags, prevPrefix := log.Writer(), log.Flags(), log.Prefix()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// Any call runs init first; with a cancelled context the API request
	// fails before leaving the process.
	_, _ = p.ListZones(ctx)
	slog.SetDefault(prevSlog)
	log.SetOutput(prevOut)
	log.SetFlags(prevFlags)
	log.SetPrefix(prevPrefix)
}

// linodeAdapter strips the trailing dot of CNAME targets, which the Linode
// API stores as bare host names.
type linodeAdapter struct {
	p *linode.Provider
}

var (
	_ Provider          = (*linodeAdapter)(nil)
	_ libdns.ZoneLister = (*linodeAdapter)(nil)
)

func (a *linodeAdapter) GetRecords(ctx context.Context, zone string) ([]libdns.Record, error) {
	return a.p.GetRecords(ctx, zone)
}

func (a *linodeAdapter) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	out := make([]libdns.Record, len(recs))
	for i, r := range recs {
		if c, ok := r.(libdns.CNAME); ok {
			c.Target = strings.TrimSuffix(c.Target, ".")
			r = c
		}
		out[i] = r
	}
	return a.p.AppendRecords(ctx, zone, out)
}

func (a *linodeAdapter) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	return a.p.DeleteRecords(ctx, zone, recs)
}

func (a *linodeAdapter) ListZones(ctx context.Context) ([]libdns.Zone, error) {
	return a.p.ListZones(ctx)
}

func checkClientIP(v string) error {
	if _, err := netip.ParseAddr(v); err != nil {
		return fmt.Errorf("NAMECHEAP_CLIENT_IP=%q is not an IP address (want the public IPv4 address whitelisted for API access)", v)
	}
	return nil
}
