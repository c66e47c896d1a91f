package acme

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/dnsread"
	"github.com/tee-ingress/tee-ingress/internal/dnsserver"
)

// persistConfig is a dns-persist-01 configuration: no DNS provider, no
// solver; records are looked up on the test DNS server.
func (w *world) persistConfig(stateDir string) Config {
	return Config{
		DirectoryURL: w.ca.DirectoryURL(), HTTPClient: w.ca.HTTPClient(),
		Keys:      &FileKeySource{Path: filepath.Join(stateDir, "account.key")},
		StateDir:  stateDir,
		Challenge: DNSPersist01,
		Resolver:  &dnsread.Resolver{Servers: []string{w.dns.Addr()}},
		Backoff:   Backoff{Initial: 50 * time.Millisecond, Max: 400 * time.Millisecond},
	}
}

// writePersist puts the records for domains into DNS, as an operator does
// once; edit changes each value first.
func (w *world) writePersist(t *testing.T, m *Manager, domains []string, edit func(*dnsread.Persist)) {
	t.Helper()
	reg, err := m.Account(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := m.CAAIssuer()
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range PersistRecords(domains, issuer, reg.URI) {
		for _, rr := range w.dns.Records(name, 16) {
			w.dns.Remove(rr)
		}
		if edit != nil {
			edit(&p)
		}
		w.dns.Add(dnsserver.MustRR(name + ` 60 IN TXT "` + p.Value() + `"`))
	}
}

// TestDNSPersist: single name, several names and a wildcard with its base
// are issued with no DNS provider and no DNS write by the ingress; renewal
// likewise; a restart orders nothing.
func TestDNSPersist(t *testing.T) {
	w := newWorld(t)
	state := t.TempDir()
	m := w.manager(t, w.persistConfig(state))
	ctx := context.Background()
	cases := [][]string{
		{"app.example.test"},
		{"a.example.test", "b.example.test"},
		{"*.wild.example.test", "wild.example.test"},
	}
	for _, domains := range cases {
		w.writePersist(t, m, domains, nil)
		before := w.dns.All()
		orders := w.ca.Orders()
		c, err := m.Ensure(ctx, domains)
		if err != nil {
			t.Fatalf("%v: %v", domains, err)
		}
		w.checkIssued(t, c, domains)
		if got := w.ca.Orders() - orders; got != 1 {
			t.Fatalf("%v: %d orders, want 1", domains, got)
		}
		if !sameRRs(before, w.dns.All()) {
			t.Fatalf("%v: DNS changed during issuance", domains)
		}
	}
	// Renewal: the ARI window opens; nothing to write, one order.
	domains := cases[0]
	old := m.Current(domains)
	now := time.Now()
	if err := w.ca.SetRenewalInfo(old.Leaf, now.Add(-time.Hour), now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	cur, renewed, _, err := m.RenewIfDue(ctx, domains)
	if err != nil || !renewed || cur.Leaf.Equal(old.Leaf) {
		t.Fatalf("renewal: renewed=%v err=%v", renewed, err)
	}
	// A restart on the same state orders nothing.
	orders := w.ca.Orders()
	m2 := w.manager(t, w.persistConfig(state))
	for _, domains := range cases {
		if _, err := m2.Ensure(ctx, domains); err != nil {
			t.Fatal(err)
		}
	}
	if w.ca.Orders() != orders {
		t.Fatal("a restart placed an order")
	}
}

// TestDNSPersistWrongRecord: each wrong or missing record stops the order
// before it is placed, with an error naming the record and what it must
// hold; a held certificate stays in use.
func TestDNSPersistWrongRecord(t *testing.T) {
	w := newWorld(t)
	m := w.manager(t, w.persistConfig(t.TempDir()))
	ctx := context.Background()
	for _, c := range []struct {
		name    string
		domains []string
		edit    func(*dnsread.Persist)
		want    string
	}{
		{"missing", []string{"none.example.test"}, nil, "no record for issuer"},
		{"other account", []string{"acct.example.test"}, func(p *dnsread.Persist) { p.AccountURI = "https://ca.test/acct/other" }, `names account "https://ca.test/acct/other"`},
		{"other CA", []string{"ca.example.test"}, func(p *dnsread.Persist) { p.Issuer = "other-ca.test" }, "no record for issuer"},
		{"expired", []string{"old.example.test"}, func(p *dnsread.Persist) { p.Until = time.Now().Add(-time.Hour) }, "expired at persistUntil"},
		{"wildcard without policy", []string{"*.w.example.test"}, func(p *dnsread.Persist) { p.Wildcard = false }, "lacks policy=wildcard"},
	} {
		if c.edit != nil {
			w.writePersist(t, m, c.domains, c.edit)
		}
		orders := w.ca.Orders()
		_, err := m.Ensure(ctx, c.domains)
		name := dnsread.PersistName(c.domains[0])
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), name+" TXT must be") {
			t.Errorf("%s: %v; want an error naming %s and %q", c.name, err, name, c.want)
		}
		if w.ca.Orders() != orders {
			t.Errorf("%s: an order was placed", c.name)
		}
	}
	// A certificate held when the record goes wrong keeps being served.
	domains := []string{"held.example.test"}
	w.writePersist(t, m, domains, nil)
	held, err := m.Ensure(ctx, domains)
	if err != nil {
		t.Fatal(err)
	}
	w.writePersist(t, m, domains, func(p *dnsread.Persist) { p.AccountURI = "https://ca.test/acct/other" })
	now := time.Now()
	if err := w.ca.SetRenewalInfo(held.Leaf, now.Add(-time.Hour), now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	cur, renewed, _, err := m.RenewIfDue(ctx, domains)
	if err == nil || renewed || cur != held || m.Current(domains) != held {
		t.Fatalf("renewal with a wrong record: renewed=%v err=%v; the held certificate must stay", renewed, err)
	}
}
