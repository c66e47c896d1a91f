package dnscaa

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/dnsread"
)

// namecheapFake is the slice of the Namecheap XML API that libdns/namecheap
// v1.0.0 uses (getTldList, dns.getHosts, dns.setHosts), for one domain. Like
// the real API, setHosts replaces the whole host list and, without
// EmailType=MX, drops the MX records and resets the mail settings.
type namecheapFake struct {
	mu        sync.Mutex
	hosts     []fakeHost
	emailType string
	commands  []string
	apiKey    string
}

type fakeHost struct {
	Name, Type, Address, MXPref, TTL string
}

func (f *namecheapFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	cmd := r.PostForm.Get("Command")
	f.commands = append(f.commands, cmd)
	if r.PostForm.Get("ApiKey") != f.apiKey {
		fmt.Fprint(w, `<ApiResponse Status="ERROR"><Errors><Error Number="1011102">API Key is invalid or API access has not been enabled</Error></Errors></ApiResponse>`)
		return
	}
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="utf-8"?><ApiResponse Status="OK" xmlns="http://api.namecheap.com/xml.response"><Errors />`)
	switch cmd {
	case "namecheap.domains.getTldList":
		b.WriteString(`<CommandResponse Type="namecheap.domains.getTldList"><Tlds><Tld Name="test" /></Tlds></CommandResponse>`)
	case "namecheap.domains.dns.getHosts":
		fmt.Fprintf(&b, `<CommandResponse Type="namecheap.domains.dns.getHosts"><DomainDNSGetHostsResult Domain="example.test" EmailType="%s" IsUsingOurDNS="true">`, f.emailType)
		for i, h := range f.hosts {
			fmt.Fprintf(&b, `<host HostId="%d" Name="%s" Type="%s" Address="%s" MXPref="%s" TTL="%s" />`,
				i+1, xmlEscape(h.Name), h.Type, xmlEscape(h.Address), h.MXPref, h.TTL)
		}
		b.WriteString(`</DomainDNSGetHostsResult></CommandResponse>`)
	case "namecheap.domains.dns.setHosts":
		var hosts []fakeHost
		for i := 1; r.PostForm.Get(fmt.Sprintf("HostName%d", i)) != ""; i++ {
			h := fakeHost{
				Name: r.PostForm.Get(fmt.Sprintf("HostName%d", i)), Type: r.PostForm.Get(fmt.Sprintf("RecordType%d", i)),
				Address: r.PostForm.Get(fmt.Sprintf("Address%d", i)), MXPref: r.PostForm.Get(fmt.Sprintf("MXPref%d", i)),
				TTL: r.PostForm.Get(fmt.Sprintf("TTL%d", i)),
			}
			if h.Type == "MX" && r.PostForm.Get("EmailType") != "MX" {
				continue
			}
			if h.Type == "CAA" && !strings.Contains(h.Address, `"`) {
				// Namecheap stores the CAA value quoted.
				parts := strings.SplitN(h.Address, " ", 3)
				h.Address = parts[0] + " " + parts[1] + ` "` + parts[2] + `"`
			}
			hosts = append(hosts, h)
		}
		f.hosts = hosts
		f.emailType = r.PostForm.Get("EmailType")
		b.WriteString(`<CommandResponse Type="namecheap.domains.dns.setHosts"><DomainDNSSetHostsResult Domain="example.test" IsSuccess="true" /></CommandResponse>`)
	default:
		fmt.Fprintf(&b, `<CommandResponse Type="%s" />`, cmd)
	}
	b.WriteString(`</ApiResponse>`)
	fmt.Fprint(w, b.String())
}

func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

func (f *namecheapFake) state() ([]fakeHost, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeHost(nil), f.hosts...), append([]string(nil), f.commands...)
}

func newNamecheap(t *testing.T, f *namecheapFake) *Client {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c, err := NewProvider(ProviderConfig{
		Name: "namecheap", CallTimeout: 5 * time.Second,
		Lookup: lookupMap(map[string]string{
			"NAMECHEAP_USERNAME": "user", "NAMECHEAP_API_KEY": f.apiKey, "NAMECHEAP_CLIENT_IP": "203.0.113.7",
		}),
		namecheapEndpoint: srv.URL,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNamecheapKeepsUnrelatedHosts(t *testing.T) {
	f := &namecheapFake{apiKey: "nc-key-0123456789abcdef", emailType: "NONE", hosts: []fakeHost{
		{"@", "A", "192.0.2.1", "10", "1800"},
		{"@", "TXT", "v=spf1 -all", "10", "1800"},
		{"sel._domainkey", "TXT", "v=DKIM1; k=rsa; p=MIIB", "10", "1800"},
		{"other", "CNAME", "elsewhere.example.net.", "10", "1800"},
		{"@", "CAA", `0 iodef "mailto:security@example.test"`, "10", "1800"},
	}}
	c := newNamecheap(t, f)
	dnsSrv := startDNS(t, "example.test") // the zone's SOA, for zone discovery
	before, _ := f.state()
	plan, err := NewPlan(PlanConfig{Domains: []string{"*.apps.example.test"}, GatewayDomain: "gw.example.net", AppID: "abc", Port: 443, CAA: testPolicy()})
	if err != nil {
		t.Fatal(err)
	}
	opts := ApplyOptions{Resolver: &dnsread.Resolver{Servers: []string{dnsSrv.Addr()}}}
	if _, err := Apply(context.Background(), c, plan, opts); err != nil {
		t.Fatal(err)
	}
	after, _ := f.state()
	if !reflect.DeepEqual(after[:len(before)], before) {
		t.Errorf("existing hosts changed:\n%v\nwant\n%v", after[:len(before)], before)
	}
	added := map[string]bool{}
	for _, h := range after[len(before):] {
		added[h.Name+" "+h.Type+" "+h.Address] = true
	}
	for _, want := range []string{
		"*.apps CNAME gw.example.net.",
		"_dstack-app-address-wildcard.apps TXT abc:443",
		`apps CAA 0 issuewild "letsencrypt.org;validationmethods=dns-01;accounturi=https://acme.example/acme/acct/1234"`,
	} {
		if !added[want] {
			t.Errorf("missing %s in %v", want, added)
		}
	}
	// Idempotent: the quoted CAA and the CNAME's dot read back as equal.
	_, cmds := f.state()
	n := len(cmds)
	if _, err := Apply(context.Background(), c, plan, opts); err != nil {
		t.Fatal(err)
	}
	_, cmds = f.state()
	for _, cmd := range cmds[n:] {
		if cmd == "namecheap.domains.dns.setHosts" {
			t.Error("second apply wrote")
		}
	}
}

func TestNamecheapRefusesToDropMail(t *testing.T) {
	for _, c := range []struct {
		name      string
		emailType string
		hosts     []fakeHost
	}{
		{"MX records", "MX", []fakeHost{{"@", "MX", "mx1.example.net.", "10", "1800"}, {"@", "TXT", "v=spf1 -all", "10", "1800"}}},
		{"mail forwarding", "FWD", []fakeHost{{"@", "TXT", "v=spf1 -all", "10", "1800"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := &namecheapFake{apiKey: "nc-key-0123456789abcdef", emailType: c.emailType, hosts: c.hosts}
			client := newNamecheap(t, f)
			dnsSrv := startDNS(t, "example.test")
			plan, _ := NewPlan(PlanConfig{Domains: []string{"app.example.test"}, AppID: "abc", Port: 443})
			_, err := Apply(context.Background(), client, plan, ApplyOptions{Resolver: &dnsread.Resolver{Servers: []string{dnsSrv.Addr()}}})
			if !errors.Is(err, ErrWouldWipe) || !strings.Contains(err.Error(), "EmailType="+c.emailType) || !strings.Contains(err.Error(), "example.test") {
				t.Fatalf("err = %v, want ErrWouldWipe naming the zone and its mail settings", err)
			}
			hosts, cmds := f.state()
			if !reflect.DeepEqual(hosts, c.hosts) {
				t.Errorf("hosts changed: %v", hosts)
			}
			for _, cmd := range cmds {
				if cmd == "namecheap.domains.dns.setHosts" {
					t.Error("setHosts was called")
				}
			}
			if strings.Contains(err.Error(), f.apiKey) {
				t.Error("API key in the error")
			}
		})
	}

	// The same DNS-01 write is refused too, with the step.
	f := &namecheapFake{apiKey: "nc-key-0123456789abcdef", emailType: "MX", hosts: []fakeHost{{"@", "MX", "mx1.example.net.", "10", "1800"}}}
	client := newNamecheap(t, f)
	dnsSrv := startDNS(t, "example.test")
	cp, err := NewChallengeProvider(client, ChallengeOptions{Resolver: &dnsread.Resolver{Servers: []string{dnsSrv.Addr()}}, CheckServers: []string{dnsSrv.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	var ce *ChallengeError
	if err := cp.Present("example.test", "", "k"); !errors.As(err, &ce) || ce.Step != StepPresent || !errors.Is(err, ErrWouldWipe) {
		t.Errorf("Present: %v", err)
	}
}

func TestNamecheapBadKey(t *testing.T) {
	f := &namecheapFake{apiKey: "right-key-0123456789"}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c, err := NewProvider(ProviderConfig{
		Name: "namecheap", CallTimeout: 5 * time.Second, namecheapEndpoint: srv.URL,
		Lookup: lookupMap(map[string]string{"NAMECHEAP_USERNAME": "user", "NAMECHEAP_API_KEY": "wrong-key-0123456789", "NAMECHEAP_CLIENT_IP": "203.0.113.7"}),
	})
	if err != nil {
		t.Fatal(err)
	}
	dnsSrv := startDNS(t, "example.test")
	plan, _ := NewPlan(PlanConfig{Domains: []string{"app.example.test"}, AppID: "abc", Port: 443})
	_, err = Apply(context.Background(), c, plan, ApplyOptions{Resolver: &dnsread.Resolver{Servers: []string{dnsSrv.Addr()}}})
	if err == nil || !strings.Contains(err.Error(), "API Key is invalid") || strings.Contains(err.Error(), "wrong-key-0123456789") {
		t.Errorf("err = %v", err)
	}
}
