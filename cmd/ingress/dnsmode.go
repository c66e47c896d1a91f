package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tee-ingress/tee-ingress/acme"
	"github.com/tee-ingress/tee-ingress/dnscaa"
	"github.com/tee-ingress/tee-ingress/dnsread"
	"github.com/tee-ingress/tee-ingress/dnssetup"
	"github.com/tee-ingress/tee-ingress/evidence/agent"
	"github.com/tee-ingress/tee-ingress/internal/fielderr"
)

// DNS setup modes (DNS_SETUP_MODE), dstack-ingress 2.3's names.
const (
	dnsModeAPI     = "api"     // write the records with the DNS provider
	dnsModePrint   = "print"   // print them and go on
	dnsModeWait    = "wait"    // print them, then wait until they are visible
	dnsModeWebhook = "webhook" // post them to DNS_WEBHOOK_URL, then wait
)

// defaultDoH are DOH_RESOLVERS' default: two public resolvers run by two
// companies, since one resolver's cache can lag behind the zone.
const defaultDoH = "https://dns.google/dns-query,https://cloudflare-dns.com/dns-query"

// DNSSetup is DNS_SETUP_MODE and what goes with it.
type DNSSetup struct {
	// Mode is api, print, wait or webhook.
	Mode string
	// Check are the resolvers a record must be visible on (wait and
	// webhook): DOH_RESOLVERS's URLs, else DNS_RESOLVERS's servers.
	Check []string
	// Interval and Timeout are DNS_SETUP_INTERVAL and DNS_SETUP_TIMEOUT.
	Interval, Timeout time.Duration
	// WebhookURL, WebhookToken and WebhookTimeout are DNS_WEBHOOK_*.
	WebhookURL, WebhookToken string
	WebhookTimeout           time.Duration
}

// awaits says whether the operator's records are printed, posted or
// waited for: every record without a DNS provider, the delegation CNAMEs
// with one (as dstack-ingress 2.3 does).
func (s DNSSetup) awaits() bool { return s.Mode != dnsModeAPI }

// parseDNSSetup reads DNS_SETUP_MODE and its settings; provider says
// whether DNS provider credentials were found.
func parseDNSSetup(s *settings, c *Config, provider bool) error {
	mode, src := s.get("dns-setup-mode")
	mode = strings.ToLower(mode)
	switch mode {
	case "":
		// dstack-ingress 2.3 waits for what the operator must create: every
		// record without credentials, the delegation CNAMEs with them.
		mode = dnsModeWait
		if provider && c.DelegationZone == "" {
			mode = dnsModeAPI
		}
	case dnsModeAPI, dnsModePrint, dnsModeWait, dnsModeWebhook:
	default:
		return bad(src, mode, "api, print, wait or webhook")
	}
	ds := DNSSetup{Mode: mode}
	switch {
	case mode == dnsModeAPI && !provider:
		return configErrorf("%s=api writes records with a DNS provider, and none is configured: set its credentials (e.g. CLOUDFLARE_API_TOKEN), or use DNS_SETUP_MODE=print, wait or webhook", src)
	case !provider && c.Challenge == acme.DNS01:
		return configErrorf("%s=%s without DNS provider credentials: CHALLENGE_TYPE=dns-01 writes a record for every order, which needs a provider; use CHALLENGE_TYPE=dns-persist-01 (one standing record) or tls-alpn-01", src, mode)
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
	}{{"DNS_SETUP_INTERVAL", &ds.Interval}, {"DNS_SETUP_TIMEOUT", &ds.Timeout}, {"DNS_WEBHOOK_TIMEOUT", &ds.WebhookTimeout}} {
		v, vsrc := s.get(d.name)
		dur, err := parseDuration(v)
		if err != nil || dur <= 0 {
			return bad(vsrc, v, "a positive duration: 15s, 30m, or a number of seconds")
		}
		*d.dst = dur
	}
	if err := parseCheckResolvers(s, c, &ds); err != nil {
		return err
	}
	ds.WebhookURL, _ = s.get("DNS_WEBHOOK_URL")
	ds.WebhookToken, _ = s.get("DNS_WEBHOOK_TOKEN")
	if mode == dnsModeWebhook {
		u, err := url.Parse(ds.WebhookURL)
		if ds.WebhookURL == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return configErrorf("DNS_SETUP_MODE=webhook needs DNS_WEBHOOK_URL, an http(s) URL of the endpoint that creates the records")
		}
		if ds.WebhookToken == "" {
			return configErrorf("DNS_SETUP_MODE=webhook needs DNS_WEBHOOK_TOKEN: without it anyone who reaches the endpoint can point the domain elsewhere")
		}
	} else if s.given("DNS_WEBHOOK_URL") {
		return configErrorf("DNS_WEBHOOK_URL is set but DNS_SETUP_MODE is %s: set DNS_SETUP_MODE=webhook, or unset it", mode)
	}
	c.DNSSetup = ds
	return nil
}

// parseCheckResolvers: DOH_RESOLVERS if given, else DNS_RESOLVERS if given,
// else the default DoH resolvers.
func parseCheckResolvers(s *settings, c *Config, ds *DNSSetup) error {
	v, src := s.get("DOH_RESOLVERS")
	if !s.given("DOH_RESOLVERS") && len(c.DNSResolvers) > 0 {
		ds.Check = c.DNSResolvers
		return nil
	}
	for _, r := range splitList(v) {
		u, err := url.Parse(r)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return bad(src, v, "DNS-over-HTTPS (RFC 8484) URLs, comma-separated, e.g. "+defaultDoH)
		}
		ds.Check = append(ds.Check, r)
	}
	return nil
}

// operatorDNS hands the records the ingress does not write to the operator
// as DNS_SETUP_MODE says: printed (and served at /dns-records), posted to
// the webhook, and waited for until every resolver shows them. With a
// provider, that is the delegation CNAMEs only.
func (d *daemon) operatorDNS(ctx context.Context, plan *dnscaa.Plan, caa dnsread.CAAPolicy) error {
	cfg := d.cfg.DNSSetup
	records := operatorRecords(plan, d.dns != nil)
	d.mu.Lock()
	d.dnsRecords = records
	d.mu.Unlock()
	fmt.Fprint(d.env.stdout, dnssetup.Render(records, strings.Join(d.cfg.Domains, ", ")))
	for _, r := range records {
		d.log.Info("DNS record for the operator to create", "mode", cfg.Mode, "record", r.String(), "why", r.Note)
	}
	if cfg.Mode == dnsModePrint {
		return nil
	}
	if cfg.Mode == dnsModeWebhook {
		if err := d.postRecords(ctx, records); err != nil {
			return err
		}
	}
	w := &dnssetup.Waiter{Permission: &caa, Domains: d.cfg.Domains, Interval: cfg.Interval, Timeout: cfg.Timeout,
		Logger: d.log.With("component", "dns")}
	for _, r := range cfg.Check {
		w.Resolvers = append(w.Resolvers, dnssetup.Resolver{Name: r, R: &dnsread.Resolver{Servers: []string{r}, HTTPClient: d.env.dohClient}})
	}
	return fielderr.Rename(w.Wait(ctx, records), setupFields)
}

// postRecords sends the records to DNS_WEBHOOK_URL, quoted by this TEE.
func (d *daemon) postRecords(ctx context.Context, records []dnssetup.Record) error {
	d.mu.Lock()
	info := d.info
	d.mu.Unlock()
	p := dnssetup.Payload{Version: 1, Domain: d.cfg.Primary, Challenge: string(d.cfg.Challenge), Timestamp: time.Now().Unix(), Records: records}
	if info != nil {
		p.AppID, p.InstanceID = hex.EncodeToString(info.AppID), hex.EncodeToString(info.InstanceID)
	}
	wh := &dnssetup.Webhook{URL: d.cfg.DNSSetup.WebhookURL, Token: d.cfg.DNSSetup.WebhookToken, Timeout: d.cfg.DNSSetup.WebhookTimeout,
		Quoter: agentQuoter{d}, Client: d.env.webhookClient, Logger: d.log.With("component", "dns-webhook")}
	return fielderr.Rename(wh.Send(ctx, p), setupFields)
}

// agentQuoter quotes with the guest agent found at start.
type agentQuoter struct{ d *daemon }

func (q agentQuoter) RawQuote(ctx context.Context, rd [64]byte) ([]byte, error) {
	a := q.d.getAgent()
	if a == nil {
		return nil, errors.New("no dstack guest agent to quote the webhook payload")
	}
	quote, err := a.Quote(ctx, rd)
	if err != nil {
		return nil, err
	}
	return quote.Raw, nil
}

// serveDNSRecords answers GET /dns-records on the metrics listener: the
// records the operator must create, for automation that should not scrape
// logs. 404 in api mode (the ingress writes them), 503 before they are
// known (the account and the app identity are needed).
func (d *daemon) serveDNSRecords(w http.ResponseWriter, _ *http.Request) {
	if !d.cfg.DNSSetup.awaits() {
		http.Error(w, "DNS_SETUP_MODE=api: the ingress writes the records itself", http.StatusNotFound)
		return
	}
	d.mu.Lock()
	records := d.dnsRecords
	d.mu.Unlock()
	if records == nil {
		w.Header().Set("Retry-After", "5")
		http.Error(w, "the records are not known yet (waiting for the guest agent and the ACME account)", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(map[string]any{"mode": d.cfg.DNSSetup.Mode, "domains": d.cfg.Domains, "records": records})
}

// operatorRecords are the plan's records in dstack-ingress's form; with a
// provider (written), only the operator's delegation CNAMEs.
func operatorRecords(plan *dnscaa.Plan, provider bool) []dnssetup.Record {
	var records []dnssetup.Record
	for _, r := range plan.Described() {
		if provider && !r.Exact {
			continue // the provider writes it
		}
		rec := dnssetup.Record{Type: r.Type, Name: dnsread.Unfqdn(r.Name), Value: dnsread.Unfqdn(r.Value), Note: r.Note, Exact: r.Exact}
		switch r.Type {
		case dnscaa.TypeCAA:
			rec.Value = fmt.Sprintf("%d %s %q", r.Flags, r.Tag, r.Value)
		case dnscaa.TypeTXT:
			rec.Value = r.Value
		}
		records = append(records, rec)
	}
	return records
}

// runRecords is `ingress records`: the records this configuration needs,
// as JSON on stdout, for automation. It asks the guest agent who the app
// is and the CA which account the key has, and touches nothing else: no
// DNS write, no evidence, no order.
func runRecords(ctx context.Context, cfg *Config, log *slog.Logger, stdout io.Writer) int {
	if cfg.CertSource != sourceACME {
		log.Error("ingress records: only CERT_SOURCE=acme needs DNS records")
		return 2
	}
	if cfg.Port == 0 && cfg.GatewayDomain != "" {
		log.Error("ingress records: the routing record names the listen port: give --listen (PORT) as the ingress runs with it, not port 0")
		return 2
	}
	d := newDaemon(cfg, log, environment{stdout: stdout})
	d.addr = &net.TCPAddr{Port: cfg.Port}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err := d.prepare()
	var a *agent.Agent
	if err == nil {
		a, err = d.findAgent()
	}
	if err == nil && !a.Legacy() {
		var info *agent.AppInfo
		if info, err = a.Info(ctx); err == nil {
			d.info = info
		}
	}
	var plan *dnscaa.Plan
	if err == nil {
		if _, err = d.mgr.Account(ctx); err == nil {
			d.accountURI = d.mgr.AccountURI()
			plan, _, err = d.dnsPlan()
		}
	}
	if err != nil {
		log.Error("ingress records: cannot work out the records", "err", err)
		return 1
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	enc.Encode(map[string]any{"mode": cfg.DNSSetup.Mode, "domains": cfg.Domains, "records": operatorRecords(plan, false)})
	return 0
}
