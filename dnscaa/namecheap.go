package dnscaa

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/libdns/libdns"
	"github.com/libdns/namecheap"
)

const namecheapEndpoint = "https://api.namecheap.com/xml.response"

func buildNamecheap(v map[string]string, cfg ProviderConfig, _ *Client) (Provider, error) {
	if err := checkToken("NAMECHEAP_API_KEY", v["NAMECHEAP_API_KEY"]); err != nil {
		return nil, err
	}
	if err := checkClientIP(v["NAMECHEAP_CLIENT_IP"]); err != nil {
		return nil, err
	}
	endpoint := namecheapEndpoint
	if cfg.namecheapEndpoint != "" {
		endpoint = cfg.namecheapEndpoint
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	return &namecheapAdapter{
		p: &namecheap.Provider{
			APIKey:      v["NAMECHEAP_API_KEY"],
			User:        v["NAMECHEAP_USERNAME"],
			APIEndpoint: endpoint,
			// Never empty: the library would ask a public "what is my IP"
			// service.
			ClientIP: v["NAMECHEAP_CLIENT_IP"],
		},
		user: v["NAMECHEAP_USERNAME"], key: v["NAMECHEAP_API_KEY"], clientIP: v["NAMECHEAP_CLIENT_IP"],
		endpoint: endpoint, http: hc,
	}, nil
}

// namecheapAdapter guards libdns/namecheap v1.0.0, whose every change is
// "read the whole host list, edit it, write the whole list back"
// (namecheap.domains.dns.setHosts). The list it reads lacks the domain's
// EmailType, and setHosts without EmailType drops the MX records and the mail
// forwarding settings: unrelated records would be wiped, which DESIGN.md
// section 12 forbids. So before each write the adapter reads the domain's
// mail settings itself and refuses to write when there are any to lose.
//
// It also hands the library pointers to typed records, the only form whose
// CAA and MX it converts correctly (value types fall through to a generic
// path that keeps the CAA value's quotes).
type namecheapAdapter struct {
	p                   *namecheap.Provider
	user, key, clientIP string
	endpoint            string
	http                *http.Client
}

var _ Provider = (*namecheapAdapter)(nil)

func (a *namecheapAdapter) GetRecords(ctx context.Context, zone string) ([]libdns.Record, error) {
	return a.p.GetRecords(ctx, zone)
}

func (a *namecheapAdapter) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	if err := a.guard(ctx, zone); err != nil {
		return nil, err
	}
	return a.p.AppendRecords(ctx, zone, pointers(recs))
}

func (a *namecheapAdapter) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	if err := a.guard(ctx, zone); err != nil {
		return nil, err
	}
	return a.p.DeleteRecords(ctx, zone, pointers(recs))
}

func pointers(recs []libdns.Record) []libdns.Record {
	out := make([]libdns.Record, len(recs))
	for i, r := range recs {
		switch v := r.(type) {
		case libdns.CNAME:
			out[i] = &v
		case libdns.TXT:
			out[i] = &v
		case libdns.CAA:
			out[i] = &v
		case libdns.Address:
			out[i] = &v
		case libdns.MX:
			out[i] = &v
		case libdns.NS:
			out[i] = &v
		default:
			out[i] = r
		}
	}
	return out
}

// ErrWouldWipe is wrapped when a provider write would remove records that are
// not part of the change.
var ErrWouldWipe = errors.New("write would remove unrelated records")

// guard refuses a write when setHosts would drop mail settings. A Namecheap
// zone is always a registered domain, so its first label is the SLD and the
// rest the TLD (co.uk included).
func (a *namecheapAdapter) guard(ctx context.Context, zone string) error {
	z := unfqdn(zone)
	sld, tld, ok := strings.Cut(z, ".")
	if !ok {
		return fmt.Errorf("namecheap zone %q is not a registered domain", z)
	}
	form := url.Values{
		"ApiUser": {a.user}, "ApiKey": {a.key}, "UserName": {a.user}, "ClientIp": {a.clientIP},
		"Command": {"namecheap.domains.dns.getHosts"}, "SLD": {sld}, "TLD": {tld},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("reading mail settings before a write: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("reading mail settings before a write: %w", err)
	}
	var r struct {
		Status string `xml:"Status,attr"`
		Errors struct {
			Error []string `xml:"Error"`
		} `xml:"Errors"`
		Result struct {
			EmailType string `xml:"EmailType,attr"`
			Hosts     []struct {
				Type string `xml:"Type,attr"`
			} `xml:"host"`
		} `xml:"CommandResponse>DomainDNSGetHostsResult"`
	}
	if err := xml.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("reading mail settings before a write: HTTP %d: %w", resp.StatusCode, err)
	}
	if !strings.EqualFold(r.Status, "OK") {
		return fmt.Errorf("reading mail settings before a write: HTTP %d: status %q: %s", resp.StatusCode, r.Status, strings.Join(r.Errors.Error, "; "))
	}
	mx := 0
	for _, h := range r.Result.Hosts {
		if t := strings.ToUpper(h.Type); t == "MX" || t == "MXE" {
			mx++
		}
	}
	email := strings.ToUpper(r.Result.EmailType)
	if mx > 0 || (email != "" && email != "NONE") {
		return fmt.Errorf("%w: refusing to change namecheap zone %s: it has mail settings (EmailType=%s, %d MX records) that libdns/namecheap v1.0.0 drops whenever it rewrites the host list; create the records by hand, or move the zone's DNS to another provider",
			ErrWouldWipe, z, r.Result.EmailType, mx)
	}
	return nil
}
