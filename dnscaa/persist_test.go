package dnscaa

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tee-ingress/tee-ingress/dnsread"
	"github.com/tee-ingress/tee-ingress/internal/dnsserver"
)

// TestPersistPlanAndApply: one dns-persist-01 record per base name, with
// policy=wildcard where a wildcard is served; applying it replaces our
// CA's old record and keeps another CA's.
func TestPersistPlanAndApply(t *testing.T) {
	persist := &dnsread.Persist{Issuer: "letsencrypt.org", AccountURI: testAccount}
	plan, err := NewPlan(PlanConfig{Domains: []string{"app.example.test", "*.w.example.test", "w.example.test"}, Persist: persist})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"_validation-persist.app.example.test.": "letsencrypt.org;accounturi=" + testAccount,
		"_validation-persist.w.example.test.":   "letsencrypt.org;accounturi=" + testAccount + ";policy=wildcard",
	}
	got := map[string]string{}
	for _, r := range plan.Records() {
		got[r.Name] = r.Value
	}
	if len(got) != len(want) || got["_validation-persist.app.example.test."] != want["_validation-persist.app.example.test."] ||
		got["_validation-persist.w.example.test."] != want["_validation-persist.w.example.test."] {
		t.Fatalf("records %v, want %v", got, want)
	}
	env := newCFEnv(t, 5*time.Second, "example.test")
	other := `_validation-persist.app.example.test. 60 IN TXT "other-ca.test;accounturi=https://other/1"`
	env.dns.Add(dnsserver.MustRR(other))
	env.dns.Add(dnsserver.MustRR(`_validation-persist.app.example.test. 60 IN TXT "letsencrypt.org;accounturi=https://old/acct/9"`))
	if _, err := Apply(context.Background(), env.client, plan, ApplyOptions{Resolver: env.resolver()}); err != nil {
		t.Fatal(err)
	}
	txts := query(t, env.dns.Addr(), "_validation-persist.app.example.test", dns.TypeTXT)
	joined := strings.Join(txts, "\n")
	if len(txts) != 2 || !strings.Contains(joined, "other-ca.test") || !strings.Contains(joined, testAccount) || strings.Contains(joined, "old/acct/9") {
		t.Fatalf("after apply: %q; want another CA's record kept and ours replaced", txts)
	}
	// Delegated: the record lives in the delegation zone and the operator
	// points the name there once.
	plan, err = NewPlan(PlanConfig{Domains: []string{"app.example.test"}, Persist: persist, DelegationZone: "deleg.example.net"})
	if err != nil {
		t.Fatal(err)
	}
	if r := plan.Records(); len(r) != 1 || r[0].Name != "_validation-persist.app.example.test.deleg.example.net." {
		t.Fatalf("delegated records %v", r)
	}
	found := false
	for _, o := range plan.Operator() {
		found = found || o.Name == "_validation-persist.app.example.test." && o.Value == "_validation-persist.app.example.test.deleg.example.net."
	}
	if !found {
		t.Fatalf("no operator CNAME for the persist record: %v", plan.Operator())
	}
}
