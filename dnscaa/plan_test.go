package dnscaa

import (
	"errors"
	"github.com/tee-ingress/tee-ingress/internal/fielderr"
	"strings"
	"testing"

	"github.com/tee-ingress/tee-ingress/dnsread"
	"github.com/tee-ingress/tee-ingress/internal/dnsserver"
)

const testAccount = "https://acme.example/acme/acct/1234"

func startDNS(t *testing.T, zones ...string) *dnsserver.Server {
	t.Helper()
	s, err := dnsserver.Start(zones...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func testPolicy() *dnsread.CAAPolicy {
	return &dnsread.CAAPolicy{IssuerDomain: "letsencrypt.org", AccountURI: testAccount}
}

func recordLines(recs []Record) string {
	var b strings.Builder
	for _, r := range recs {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	return b.String()
}

func TestNewPlanRecords(t *testing.T) {
	p, err := NewPlan(PlanConfig{
		Domains:       []string{"App.Example.test", "*.apps.example.test", "app.example.test"},
		GatewayDomain: "_.dstack-prod5.phala.network",
		AppID:         "b1ea785543bbbb19ce9de33744321360992bf63b",
		Port:          443,
		CAA:           testPolicy(),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `*.apps.example.test. 60 IN CNAME _.dstack-prod5.phala.network.
_dstack-app-address-wildcard.apps.example.test. 60 IN TXT "b1ea785543bbbb19ce9de33744321360992bf63b:443"
_dstack-app-address.app.example.test. 60 IN TXT "b1ea785543bbbb19ce9de33744321360992bf63b:443"
app.example.test. 60 IN CNAME _.dstack-prod5.phala.network.
app.example.test. 60 IN CAA 0 issue "letsencrypt.org;validationmethods=dns-01;accounturi=https://acme.example/acme/acct/1234"
apps.example.test. 60 IN CAA 0 issuewild "letsencrypt.org;validationmethods=dns-01;accounturi=https://acme.example/acme/acct/1234"
`
	if got := recordLines(p.Records()); got != want {
		t.Errorf("records:\n%s\nwant:\n%s", got, want)
	}
	if len(p.Operator()) != 0 || p.DelegationZone() != "" {
		t.Errorf("operator records without delegation: %v", p.Operator())
	}
	// The CAA value has no spaces: libdns parses CAA data by splitting on
	// them.
	for _, r := range p.Records() {
		if r.Type == TypeCAA && strings.ContainsAny(r.Value, " \t") {
			t.Errorf("CAA value with whitespace: %q", r.Value)
		}
	}
}

func TestNewPlanDelegation(t *testing.T) {
	p, err := NewPlan(PlanConfig{
		Domains:        []string{"svc.example.com", "*.app.example.com"},
		GatewayDomain:  "_.dstack-prod5.phala.network",
		AppID:          "abc123",
		Port:           8443,
		CAA:            &dnsread.CAAPolicy{IssuerDomain: "letsencrypt.org", AccountURI: testAccount, ValidationMethods: []string{"dns-01"}},
		DelegationZone: "deleg.example.net.",
		TXTPrefix:      "_tapp-address",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `_tapp-address-wildcard.app.example.com.deleg.example.net. 60 IN TXT "abc123:8443"
_tapp-address.svc.example.com.deleg.example.net. 60 IN TXT "abc123:8443"
app.example.com.deleg.example.net. 60 IN CNAME _.dstack-prod5.phala.network.
app.example.com.deleg.example.net. 60 IN CAA 0 issuewild "letsencrypt.org;validationmethods=dns-01;accounturi=https://acme.example/acme/acct/1234"
svc.example.com.deleg.example.net. 60 IN CNAME _.dstack-prod5.phala.network.
svc.example.com.deleg.example.net. 60 IN CAA 0 issue "letsencrypt.org;validationmethods=dns-01;accounturi=https://acme.example/acme/acct/1234"
`
	if got := recordLines(p.Records()); got != want {
		t.Errorf("records:\n%s\nwant:\n%s", got, want)
	}
	// The CNAMEs dstack-ingress's README tells the operator to create.
	wantOp := `svc.example.com. 60 IN CNAME svc.example.com.deleg.example.net.
_tapp-address.svc.example.com. 60 IN CNAME _tapp-address.svc.example.com.deleg.example.net.
_acme-challenge.svc.example.com. 60 IN CNAME _acme-challenge.svc.example.com.deleg.example.net.
*.app.example.com. 60 IN CNAME app.example.com.deleg.example.net.
_tapp-address-wildcard.app.example.com. 60 IN CNAME _tapp-address-wildcard.app.example.com.deleg.example.net.
app.example.com. 60 IN CNAME app.example.com.deleg.example.net.
_acme-challenge.app.example.com. 60 IN CNAME _acme-challenge.app.example.com.deleg.example.net.
`
	if got := recordLines(p.Operator()); got != wantOp {
		t.Errorf("operator records:\n%s\nwant:\n%s", got, wantOp)
	}
	if got := ChallengeName("*.app.example.com", "deleg.example.net"); got != "_acme-challenge.app.example.com.deleg.example.net." {
		t.Errorf("ChallengeName = %q", got)
	}
}

func TestNewPlanBadInput(t *testing.T) {
	base := func() PlanConfig {
		return PlanConfig{
			Domains: []string{"app.example.test"}, GatewayDomain: "gw.example.net",
			AppID: "abc", Port: 443, CAA: testPolicy(),
		}
	}
	cases := []struct {
		name string
		edit func(*PlanConfig)
		want []string
	}{
		{"no domain", func(c *PlanConfig) { c.Domains = nil }, []string{"Domains", "no domain"}},
		{"invalid domain", func(c *PlanConfig) { c.Domains = []string{"app..example.test"} }, []string{"Domains", "empty label"}},
		{"wildcard in the middle", func(c *PlanConfig) { c.Domains = []string{"a.*.example.test"} }, []string{"Domains", "wildcard", "*.example.com"}},
		{"ip", func(c *PlanConfig) { c.Domains = []string{"10.0.0.1"} }, []string{"Domains", "IP address"}},
		{"port missing", func(c *PlanConfig) { c.Port = 0 }, []string{"Port", "1-65535"}},
		{"port too big", func(c *PlanConfig) { c.Port = 70000 }, []string{"Port"}},
		{"prefix with dot", func(c *PlanConfig) { c.TXTPrefix = "_a.b" }, []string{"TXTPrefix", "_dstack-app-address"}},
		{"bad gateway", func(c *PlanConfig) { c.GatewayDomain = "gw..example" }, []string{"GatewayDomain"}},
		{"gateway is served", func(c *PlanConfig) { c.GatewayDomain = "app.example.test" }, []string{"GatewayDomain", "itself"}},
		{"app id quote", func(c *PlanConfig) { c.AppID = `ab"c` }, []string{"AppID", "app id"}},
		{"account not a URL", func(c *PlanConfig) { c.CAA.AccountURI = "acct-1" }, []string{"CAA", "account URI"}},
		{"account with semicolon", func(c *PlanConfig) { c.CAA.AccountURI = "https://ca.example/acct;x=1" }, []string{"CAA", `';'`}},
		{"account with space", func(c *PlanConfig) { c.CAA.AccountURI = "https://ca.example/a b" }, []string{"CAA"}},
		{"bad issuer", func(c *PlanConfig) { c.CAA.IssuerDomain = "lets encrypt" }, []string{"CAA", "issuer"}},
		{"bad method", func(c *PlanConfig) { c.CAA.ValidationMethods = []string{"dns 01"} }, []string{"CAA", "method"}},
		{"bad delegation zone", func(c *PlanConfig) { c.DelegationZone = "deleg" }, []string{"DelegationZone"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := base()
			c.edit(&cfg)
			_, err := NewPlan(cfg)
			if err == nil {
				t.Fatal("accepted")
			}
			// The field is typed (cmd/ingress renames it for the operator)
			// and named first.
			var fe *fielderr.Error
			if !errors.As(err, &fe) || fe.Field != c.want[0] || !strings.HasPrefix(err.Error(), fe.Field) {
				t.Errorf("error %q: want a *fielderr.Error for field %s", err, c.want[0])
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
