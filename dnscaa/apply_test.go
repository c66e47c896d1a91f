package dnscaa

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tee-ingress/tee-ingress/dnsread"
	"github.com/tee-ingress/tee-ingress/internal/cfemu"
	"github.com/tee-ingress/tee-ingress/internal/dnsserver"
)

// unrelated are records of other owners the ingress must never change.
var unrelated = []string{
	`example.test. 300 IN MX 10 mail.example.test.`,
	`example.test. 300 IN TXT "v=spf1 include:_spf.example.net -all"`,
	`sel._domainkey.example.test. 300 IN TXT "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu"`,
	`example.test. 300 IN CAA 0 iodef "mailto:security@example.test"`,
	`other.example.test. 300 IN CNAME elsewhere.example.net.`,
	`apps.example.test. 300 IN CAA 0 iodef "mailto:security@example.test"`,
	`mail.example.test. 300 IN A 192.0.2.25`,
}

// replaced are records the plan owns and changes.
var replaced = []string{
	`app.example.test. 300 IN A 192.0.2.10`,
	`_dstack-app-address.app.example.test. 60 IN TXT "oldapp:443"`,
	`apps.example.test. 300 IN CAA 0 issuewild "pki.goog"`,
}

func gatewayPlan(t *testing.T) *Plan {
	t.Helper()
	p, err := NewPlan(PlanConfig{
		Domains:       []string{"app.example.test", "*.apps.example.test"},
		GatewayDomain: "_.gateway.example.net",
		AppID:         "b1ea785543bbbb19ce9de33744321360992bf63b",
		Port:          443,
		CAA:           testPolicy(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// withoutCAAAt drops the CAA at app.example.test, which sits beside the
// gateway CNAME there (see TestApplyCAABesideCNAME).
func withoutCAAAt(p *Plan, name string) *Plan {
	q := *p
	q.records = nil
	for _, r := range p.records {
		if !(r.Type == TypeCAA && r.Name == name) {
			q.records = append(q.records, r)
		}
	}
	return &q
}

func TestApplyCloudflare(t *testing.T) {
	env := newCFEnv(t, 5*time.Second, "example.test")
	mustAdd(env.dns, unrelated...)
	mustAdd(env.dns, replaced...)
	before := snapshot(env.dns)
	plan := withoutCAAAt(gatewayPlan(t), "app.example.test.")
	ctx := context.Background()
	opts := ApplyOptions{Resolver: env.resolver(), Logger: env.logger}

	preview, err := Preview(ctx, env.client, plan, opts)
	if err != nil {
		t.Fatal(err)
	}
	if w := env.writes(); len(w) != 0 {
		t.Fatalf("Preview wrote: %v", w)
	}
	var got []string
	for _, c := range preview {
		got = append(got, c.Action+" "+c.Record.String())
	}
	slices.Sort(got)
	want := []string{
		`create *.apps.example.test. 60 IN CNAME _.gateway.example.net.`,
		`create _dstack-app-address-wildcard.apps.example.test. 60 IN TXT "b1ea785543bbbb19ce9de33744321360992bf63b:443"`,
		`create _dstack-app-address.app.example.test. 60 IN TXT "b1ea785543bbbb19ce9de33744321360992bf63b:443"`,
		`create app.example.test. 60 IN CNAME _.gateway.example.net.`,
		`create apps.example.test. 300 IN CAA 0 issuewild "letsencrypt.org;validationmethods=dns-01;accounturi=https://acme.example/acme/acct/1234"`,
		`delete _dstack-app-address.app.example.test. 60 IN TXT "oldapp:443"`,
		`delete app.example.test. 300 IN A 192.0.2.10`,
		`delete apps.example.test. 300 IN CAA 0 issuewild "pki.goog"`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("preview:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	if _, err := Apply(ctx, env.client, plan, opts); err != nil {
		t.Fatal(err)
	}

	// Read back over DNS, exact values.
	srv := env.dns.Addr()
	checks := []struct {
		name  string
		qtype uint16
		want  []string
	}{
		{"app.example.test", dns.TypeCNAME, []string{"_.gateway.example.net."}},
		{"app.example.test", dns.TypeA, nil},
		{"_dstack-app-address.app.example.test", dns.TypeTXT, []string{`"b1ea785543bbbb19ce9de33744321360992bf63b:443"`}},
		{"*.apps.example.test", dns.TypeCNAME, []string{"_.gateway.example.net."}},
		{"_dstack-app-address-wildcard.apps.example.test", dns.TypeTXT, []string{`"b1ea785543bbbb19ce9de33744321360992bf63b:443"`}},
		{"apps.example.test", dns.TypeCAA, []string{
			`0 iodef "mailto:security@example.test"`,
			`0 issuewild "letsencrypt.org;validationmethods=dns-01;accounturi=https://acme.example/acme/acct/1234"`,
		}},
	}
	for _, c := range checks {
		got := query(t, srv, c.name, c.qtype)
		slices.Sort(got)
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s %s = %q, want %q", c.name, dns.TypeToString[c.qtype], got, c.want)
		}
	}
	// A name under the wildcard resolves to the gateway.
	if got := query(t, srv, "x.apps.example.test", dns.TypeCNAME); !reflect.DeepEqual(got, []string{"_.gateway.example.net."}) {
		t.Errorf("x.apps.example.test CNAME = %q", got)
	}

	// Everything not planned is byte-for-byte as before.
	after := snapshot(env.dns)
	owned := func(line string) bool {
		for _, r := range plan.Records() {
			if strings.HasPrefix(line, r.Name+"\t") && strings.Contains(line, "\t"+r.Type+"\t") {
				if r.Type != TypeCAA || strings.Contains(line, r.Tag) {
					return true
				}
			}
		}
		for _, l := range replaced {
			if dnsLine(t, l) == line {
				return true
			}
		}
		return false
	}
	var keptBefore, keptAfter []string
	for _, l := range before {
		if !owned(l) {
			keptBefore = append(keptBefore, l)
		}
	}
	for _, l := range after {
		if !owned(l) {
			keptAfter = append(keptAfter, l)
		}
	}
	if !reflect.DeepEqual(keptBefore, keptAfter) {
		t.Errorf("unrelated records changed:\nbefore %q\nafter  %q", keptBefore, keptAfter)
	}
	if len(keptBefore) != len(unrelated)+2 { // + SOA and NS
		t.Errorf("expected %d unrelated records, saw %d", len(unrelated)+2, len(keptBefore))
	}
	for _, l := range replaced {
		if slices.Contains(after, dnsLine(t, l)) {
			t.Errorf("replaced record still there: %s", l)
		}
	}

	// A second apply changes nothing and writes nothing.
	n := len(env.cf.Requests())
	changes, err := Apply(ctx, env.client, plan, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range changes {
		if c.Action != ActionKeep {
			t.Errorf("second apply: %s", c)
		}
	}
	for _, r := range env.cf.Requests()[n:] {
		if !strings.HasPrefix(r, "GET ") {
			t.Errorf("second apply wrote: %s", r)
		}
	}
	if !reflect.DeepEqual(snapshot(env.dns), after) {
		t.Error("second apply changed the zone")
	}
	// The log names each change, never the token.
	if !strings.Contains(env.logs.String(), "dns record created") || strings.Contains(env.logs.String(), cfToken) {
		t.Errorf("log: %s", env.logs.String())
	}
}

// onceOn faults the first request with the given method only.
func onceOn(method string, f cfemu.Fault) func(*http.Request) cfemu.Fault {
	var mu sync.Mutex
	done := false
	return func(r *http.Request) cfemu.Fault {
		mu.Lock()
		defer mu.Unlock()
		if r.Method == method && !done {
			done = true
			return f
		}
		return cfemu.Fault{}
	}
}

func dnsLine(t *testing.T, zoneLine string) string {
	t.Helper()
	rr, err := dns.NewRR(zoneLine)
	if err != nil {
		t.Fatal(err)
	}
	return rr.String()
}

// TestApplyCAABesideCNAME pins CAA at a name that also carries the gateway
// CNAME, as DESIGN.md section 5 and dstack-ingress do on Cloudflare, which
// keeps a CAA beside a CNAME.
func TestApplyCAABesideCNAME(t *testing.T) {
	env := newCFEnv(t, 5*time.Second, "example.test")
	mustAdd(env.dns, replaced[0])
	plan := gatewayPlan(t)
	_, err := Apply(context.Background(), env.client, plan, ApplyOptions{Resolver: env.resolver()})
	if err != nil {
		t.Fatalf("CAA beside the gateway CNAME refused: %v", err)
	}
	if got := query(t, env.dns.Addr(), "app.example.test", dns.TypeCAA); len(got) != 1 || !strings.Contains(got[0], "accounturi="+testAccount) {
		t.Errorf("CAA at app.example.test = %q", got)
	}
	if got := query(t, env.dns.Addr(), "app.example.test", dns.TypeCNAME); len(got) != 1 || !strings.Contains(got[0], "_.gateway.example.net.") {
		t.Errorf("CNAME at app.example.test = %q", got)
	}
}

func TestApplyProviderWithoutCNAMESiblings(t *testing.T) {
	env := newCFEnv(t, 5*time.Second, "example.test")
	env.client.cnameSiblings = false
	_, err := Apply(context.Background(), env.client, gatewayPlan(t), ApplyOptions{Resolver: env.resolver()})
	if !isField(err, "CAA") || !strings.Contains(err.Error(), "app.example.test") {
		t.Fatalf("err = %v, want a CAA field error naming the domain", err)
	}
	if w := env.writes(); len(w) != 0 {
		t.Errorf("wrote before failing: %v", w)
	}
}

func TestApplyConflictsBeforeWriting(t *testing.T) {
	cases := []struct {
		name    string
		records []string
		domain  string
		want    string
	}{
		{"MX at the name", []string{`app.example.test. 300 IN MX 10 mx.example.test.`}, "app.example.test", "MX records"},
		{"zone apex", nil, "example.test", "apex"},
		{"CNAME where the TXT goes", []string{`_dstack-app-address.app.example.test. 300 IN CNAME x.example.net.`}, "app.example.test", "CNAME"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := newCFEnv(t, 5*time.Second, "example.test")
			mustAdd(env.dns, c.records...)
			before := snapshot(env.dns)
			p, err := NewPlan(PlanConfig{Domains: []string{c.domain}, GatewayDomain: "gw.example.net", AppID: "abc", Port: 443})
			if err != nil {
				t.Fatal(err)
			}
			_, err = Apply(context.Background(), env.client, p, ApplyOptions{Resolver: env.resolver()})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want mention of %q", err, c.want)
			}
			if w := env.writes(); len(w) != 0 {
				t.Errorf("wrote before failing: %v", w)
			}
			if !reflect.DeepEqual(snapshot(env.dns), before) {
				t.Error("zone changed")
			}
		})
	}
}

func TestApplyFaults(t *testing.T) {
	const timeout = 500 * time.Millisecond
	cases := []struct {
		name  string
		fault func(*http.Request) cfemu.Fault
		token string
		want  []string
	}{
		{"500 on writes", faultOn(http.MethodPost, cfemu.Fault{Status: http.StatusInternalServerError}), "", []string{"cloudflare", "HTTP 500"}},
		{"500 on the first delete", onceOn(http.MethodDelete, cfemu.Fault{Status: http.StatusInternalServerError}), "", []string{"cloudflare", "delete", "HTTP 500", "rolled back"}},
		{"hang on writes", faultOn(http.MethodPost, cfemu.Fault{Hang: true}), "", []string{"cloudflare", "no answer within 500ms"}},
		{"hang on reads", faultOn(http.MethodGet, cfemu.Fault{Hang: true}), "", []string{"cloudflare", "no answer within 500ms"}},
		{"bad token", nil, "tok_wrong_0123456789abcdef0123456789abcdef", []string{"cloudflare", "HTTP 403"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := newCFEnv(t, timeout, "example.test")
			mustAdd(env.dns, unrelated...)
			mustAdd(env.dns, replaced...)
			before := snapshot(env.dns)
			client := env.client
			if c.token != "" {
				var err error
				client, err = NewProvider(ProviderConfig{
					Name: "cloudflare", Lookup: lookupMap(map[string]string{"CLOUDFLARE_API_TOKEN": c.token}),
					HTTPClient: env.cf.HTTPClient(), CallTimeout: timeout, Logger: env.logger,
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			env.cf.SetFault(c.fault)
			start := time.Now()
			_, err := Apply(context.Background(), client, withoutCAAAt(gatewayPlan(t), "app.example.test."), ApplyOptions{Resolver: env.resolver(), Logger: env.logger})
			took := time.Since(start)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			// Bounded: a handful of calls, each under the call timeout
			// (plus slack for a loaded machine).
			if took > 20*timeout+10*time.Second {
				t.Errorf("took %s", took)
			}
			if strings.Contains(err.Error(), cfToken) || (c.token != "" && strings.Contains(err.Error(), c.token)) {
				t.Errorf("error contains the token: %v", err)
			}
			if strings.Contains(env.logs.String(), cfToken) || (c.token != "" && strings.Contains(env.logs.String(), c.token)) {
				t.Error("log contains the token")
			}
			env.cf.SetFault(nil)
			if got := snapshot(env.dns); !reflect.DeepEqual(got, before) {
				t.Errorf("zone not as before:\n%q\nwant\n%q", got, before)
			}
		})
	}
}

func TestApplyDelegation(t *testing.T) {
	env := newCFEnv(t, 5*time.Second, "example.test", "deleg.example.net")
	// The token reaches only the delegation zone.
	env.cf.ScopeToZones("deleg.example.net")
	mustAdd(env.dns, unrelated...)
	p, err := NewPlan(PlanConfig{
		Domains: []string{"*.apps.example.test"}, GatewayDomain: "_.gateway.example.net",
		AppID: "abc", Port: 443, CAA: testPolicy(), DelegationZone: "deleg.example.net",
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &dnsread.Resolver{Servers: []string{env.dns.Addr()}}
	missing, err := MissingOperatorRecords(context.Background(), r, p)
	if err != nil || len(missing) != 4 {
		t.Fatalf("missing operator records = %v, %v", missing, err)
	}
	// The operator's CNAMEs, created by hand (one with a typo first).
	mustAdd(env.dns, `*.apps.example.test. 60 IN CNAME apps.example.test.deleg.example.com.`)
	for _, r := range p.Operator()[1:] {
		mustAdd(env.dns, r.String())
	}
	if missing, err := MissingOperatorRecords(context.Background(), r, p); err != nil || len(missing) != 1 || missing[0].Name != "*.apps.example.test." {
		t.Fatalf("missing operator records = %v, %v", missing, err)
	}
	env.dns.Remove(dnsserver.MustRR(`*.apps.example.test. 60 IN CNAME apps.example.test.deleg.example.com.`))
	mustAdd(env.dns, p.Operator()[0].String())
	if missing, err := MissingOperatorRecords(context.Background(), r, p); err != nil || len(missing) != 0 {
		t.Fatalf("missing operator records = %v, %v", missing, err)
	}
	before := snapshot(env.dns)
	if _, err := Apply(context.Background(), env.client, p, ApplyOptions{Resolver: env.resolver()}); err != nil {
		// The CAA sits beside the alias CNAME in the delegation zone
		// (dstack-ingress relies on Cloudflare accepting that); the
		// emulator refuses it.
		if !strings.Contains(err.Error(), "81054") {
			t.Fatal(err)
		}
		t.Logf("emulator refuses CAA beside CNAME: %v", err)
		p = withoutCAAAt(p, "apps.example.test.deleg.example.net.")
		if _, err := Apply(context.Background(), env.client, p, ApplyOptions{Resolver: env.resolver()}); err != nil {
			t.Fatal(err)
		}
	}
	srv := env.dns.Addr()
	// Through the operator's CNAMEs, the served names reach the records.
	end, chain, err := r.FollowCNAME(context.Background(), "x.apps.example.test")
	if err != nil || end != "_.gateway.example.net." || len(chain) != 2 {
		t.Errorf("x.apps.example.test leads to %s via %v (%v)", end, chain, err)
	}
	if got := query(t, srv, "_dstack-app-address-wildcard.apps.example.test.deleg.example.net", dns.TypeTXT); !reflect.DeepEqual(got, []string{`"abc:443"`}) {
		t.Errorf("TXT = %q", got)
	}
	// Nothing that was there changed, and everything new is in the
	// delegation zone.
	after := snapshot(env.dns)
	for _, l := range before {
		if !slices.Contains(after, l) {
			t.Errorf("lost %s", l)
		}
	}
	for _, l := range after {
		if !slices.Contains(before, l) && !strings.HasSuffix(strings.Fields(l)[0], ".deleg.example.net.") {
			t.Errorf("new record outside the delegation zone: %s", l)
		}
	}
	for _, w := range env.writes() {
		if !strings.Contains(w, cfemu.ZoneID("deleg.example.net")) {
			t.Errorf("write outside the delegation zone: %s", w)
		}
	}
}

// TestApplyDeleteFaultPersists: when deletes keep failing, the rollback
// cannot remove what was created; the error says exactly what is left.
func TestApplyDeleteFaultPersists(t *testing.T) {
	env := newCFEnv(t, 500*time.Millisecond, "example.test")
	mustAdd(env.dns, replaced...)
	env.cf.SetFault(faultOn(http.MethodDelete, cfemu.Fault{Status: http.StatusInternalServerError}))
	_, err := Apply(context.Background(), env.client, withoutCAAAt(gatewayPlan(t), "app.example.test."), ApplyOptions{Resolver: env.resolver()})
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{"HTTP 500", "rolling back failed too", "undo create *.apps.example.test. 60 IN CNAME _.gateway.example.net."} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

func TestApplyNoZone(t *testing.T) {
	env := newCFEnv(t, 5*time.Second, "example.test")
	p, err := NewPlan(PlanConfig{Domains: []string{"app.other.test"}, GatewayDomain: "gw.example.net"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Apply(context.Background(), env.client, p, ApplyOptions{})
	if err == nil || !strings.Contains(err.Error(), "app.other.test") || !strings.Contains(err.Error(), "example.test") {
		t.Fatalf("err = %v, want the name and the zones seen", err)
	}
	_, err = Apply(context.Background(), env.client, p, ApplyOptions{Zone: "example.test"})
	if !isField(err, "Zone") || !strings.Contains(err.Error(), "does not contain app.other.test") {
		t.Fatalf("err = %v, want a Zone field error", err)
	}
	if !errors.Is(err, err) || len(env.writes()) != 0 {
		t.Error("wrote")
	}
}
