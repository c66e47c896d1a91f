package dnscaa

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tee-ingress/tee-ingress/dnsread"
	"github.com/tee-ingress/tee-ingress/internal/bind9"
)

const (
	tsigKey    = "tee-ingress."
	tsigSecret = "dGVlLWluZ3Jlc3MtdGVzdC10c2lnLXNlY3JldC0wMTI=" // base64, 32 bytes
)

const bindZone = `$TTL 300
@                IN SOA   ns1.example.test. hostmaster.example.test. 1 7200 3600 1209600 60
@                IN NS    ns1.example.test.
ns1              IN A     127.0.0.1
@                IN MX    10 mail.example.test.
@                IN TXT   "v=spf1 include:_spf.example.net -all"
sel._domainkey   IN TXT   "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu"
@                IN CAA   0 iodef "mailto:security@example.test"
apps             IN CAA   0 iodef "mailto:security@example.test"
other            IN CNAME elsewhere.example.net.
mail             IN A     192.0.2.25
app              IN A     192.0.2.10
`

// bind is a real BIND9 serving example.test on a loopback port, accepting
// dynamic updates and zone transfers signed with the test TSIG key.
type bind struct {
	addr string
}

// startBIND starts a real named serving bindZone and stops it when the test
// ends.
func startBIND(t *testing.T) *bind {
	t.Helper()
	s, err := bind9.Start(bind9.Options{Dir: t.TempDir(), Zone: "example.test", ZoneFile: bindZone, KeyName: tsigKey, Secret: tsigSecret})
	if errors.Is(err, bind9.ErrNotInstalled) {
		t.Skipf("%v: the RFC 2136 tests need it", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &bind{addr: s.Addr}
}

// axfr is the zone by transfer, as zone-file lines sorted, SOA left out
// (its serial moves with every update).
func (b *bind) axfr(t *testing.T) []string {
	t.Helper()
	m := new(dns.Msg)
	m.SetAxfr("example.test.")
	m.SetTsig(tsigKey, dns.HmacSHA256, 300, time.Now().Unix())
	tr := &dns.Transfer{TsigSecret: map[string]string{tsigKey: tsigSecret}}
	ch, err := tr.In(m, b.addr)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for env := range ch {
		if env.Error != nil {
			t.Fatal(env.Error)
		}
		for _, rr := range env.RR {
			if rr.Header().Rrtype != dns.TypeSOA {
				out = append(out, rr.String())
			}
		}
	}
	slices.Sort(out)
	return out
}

func (b *bind) serial(t *testing.T) uint32 {
	t.Helper()
	m, err := dnsread.QueryServer(context.Background(), b.addr, "example.test", dns.TypeSOA, false, time.Second)
	if err != nil || len(m.Answer) != 1 {
		t.Fatalf("SOA: %v %v", m, err)
	}
	return m.Answer[0].(*dns.SOA).Serial
}

func (b *bind) provider(t *testing.T) *Client {
	t.Helper()
	c, err := NewProvider(ProviderConfig{Name: "rfc2136", CallTimeout: 5 * time.Second, Lookup: lookupMap(map[string]string{
		"RFC2136_NAMESERVER": b.addr, "RFC2136_TSIG_KEY": tsigKey, "RFC2136_TSIG_SECRET": tsigSecret, "RFC2136_TSIG_ALGORITHM": "hmac-sha256",
	})})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRFC2136Apply(t *testing.T) {
	b := startBIND(t)
	c := b.provider(t)
	ctx := context.Background()
	opts := ApplyOptions{Resolver: &dnsread.Resolver{Servers: []string{b.addr}}}
	before := b.axfr(t)

	// BIND refuses a CAA beside a CNAME: caught before any write.
	_, err := Apply(ctx, c, gatewayPlan(t), opts)
	if !isField(err, "CAA") {
		t.Fatalf("err = %v, want the CAA conflict", err)
	}
	if !reflect.DeepEqual(b.axfr(t), before) || b.serial(t) != 1 {
		t.Fatal("zone changed by a refused plan")
	}

	plain, err := NewPlan(PlanConfig{Domains: []string{"app.example.test"}, GatewayDomain: "_.gateway.example.net", AppID: "appid1", Port: 443})
	if err != nil {
		t.Fatal(err)
	}
	wild, err := NewPlan(PlanConfig{Domains: []string{"*.apps.example.test"}, GatewayDomain: "_.gateway.example.net", AppID: "appid1", Port: 443, CAA: testPolicy()})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*Plan{plain, wild} {
		if _, err := Apply(ctx, c, p, opts); err != nil {
			t.Fatal(err)
		}
	}
	checks := []struct {
		name  string
		qtype uint16
		want  []string
	}{
		{"app.example.test", dns.TypeCNAME, []string{"_.gateway.example.net."}},
		{"_dstack-app-address.app.example.test", dns.TypeTXT, []string{`"appid1:443"`}},
		{"*.apps.example.test", dns.TypeCNAME, []string{"_.gateway.example.net."}},
		{"_dstack-app-address-wildcard.apps.example.test", dns.TypeTXT, []string{`"appid1:443"`}},
		{"apps.example.test", dns.TypeCAA, []string{
			`0 iodef "mailto:security@example.test"`,
			`0 issuewild "letsencrypt.org;validationmethods=dns-01;accounturi=https://acme.example/acme/acct/1234"`,
		}},
	}
	for _, ch := range checks {
		got := query(t, b.addr, ch.name, ch.qtype)
		slices.Sort(got)
		if !reflect.DeepEqual(got, ch.want) {
			t.Errorf("%s %s = %q, want %q", ch.name, dns.TypeToString[ch.qtype], got, ch.want)
		}
	}
	for _, ch := range checks {
		// The CAA joined the iodef's RRset, and took its TTL.
		want := uint32(60)
		if ch.qtype == dns.TypeCAA {
			want = 300
		}
		if m, _ := dnsread.QueryServer(ctx, b.addr, ch.name, ch.qtype, false, time.Second); m == nil || len(m.Answer) == 0 || m.Answer[0].Header().Ttl != want {
			t.Errorf("%s: TTL not %d: %v", ch.name, want, m)
		}
	}
	// The CAA the verifier reads for the wildcard.
	set, err := dnsread.LookupCAA(ctx, b.addr, "*.apps.example.test")
	if err != nil {
		t.Fatal(err)
	}
	if res := dnsread.CheckCAA(set, *testPolicy()); !res.OK() || res.Tag != dnsread.TagIssueWild {
		t.Errorf("CAA check: %+v", res)
	}

	// Everything else is as it was; the A record the CNAME replaced is
	// gone.
	after := b.axfr(t)
	var kept []string
	for _, l := range after {
		owned := false
		for _, p := range []*Plan{plain, wild} {
			for _, r := range p.Records() {
				if strings.HasPrefix(l, r.Name+"\t") && strings.Contains(l, "\t"+r.Type+"\t") && (r.Type != TypeCAA || strings.Contains(l, r.Tag+" ")) {
					owned = true
				}
			}
		}
		if !owned {
			kept = append(kept, l)
		}
	}
	var wantKept []string
	for _, l := range before {
		if !strings.HasPrefix(l, "app.example.test.\t") {
			wantKept = append(wantKept, l)
		}
	}
	if !reflect.DeepEqual(kept, wantKept) {
		t.Errorf("unrelated records changed:\n%q\nwant\n%q", kept, wantKept)
	}

	// Applying again sends no update: the serial stays.
	serial := b.serial(t)
	for _, p := range []*Plan{plain, wild} {
		changes, err := Apply(ctx, c, p, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range changes {
			if ch.Action != ActionKeep {
				t.Errorf("second apply: %s", ch)
			}
		}
	}
	if got := b.serial(t); got != serial {
		t.Errorf("serial moved from %d to %d on an idempotent apply", serial, got)
	}

	// A wrong TSIG secret is refused by BIND, with a clear error.
	bad, err := NewProvider(ProviderConfig{Name: "rfc2136", CallTimeout: 2 * time.Second, Lookup: lookupMap(map[string]string{
		"RFC2136_NAMESERVER": b.addr, "RFC2136_TSIG_KEY": tsigKey, "RFC2136_TSIG_SECRET": "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZzA=",
	})})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewPlan(PlanConfig{Domains: []string{"new.example.test"}, GatewayDomain: "gw.example.net"})
	_, err = Apply(ctx, bad, other, opts)
	if err == nil || !strings.Contains(err.Error(), "rfc2136") || strings.Contains(err.Error(), "d3Jvbmct") {
		t.Errorf("wrong key: %v", err)
	}
	t.Logf("wrong key: %v", err)
}

func TestRFC2136Challenge(t *testing.T) {
	b := startBIND(t)
	c := b.provider(t)
	before := b.axfr(t)
	cp, err := NewChallengeProvider(c, ChallengeOptions{
		Resolver:     &dnsread.Resolver{Servers: []string{b.addr}},
		CheckServers: []string{b.addr},
		PollInterval: 50 * time.Millisecond, PropagationTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	name, _ := ChallengeRecord("example.test", "")
	keys := []string{"a.key", "b.key"}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- cp.Present("example.test", "", k)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var want []string
	for _, k := range keys {
		_, v := ChallengeRecord("example.test", k)
		want = append(want, `"`+v+`"`)
	}
	slices.Sort(want)
	got := query(t, b.addr, name, dns.TypeTXT)
	slices.Sort(got)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("TXT = %q, want %q", got, want)
	}
	if err := cp.CleanUp("example.test", "", keys[0]); err != nil {
		t.Fatal(err)
	}
	if got := query(t, b.addr, name, dns.TypeTXT); !reflect.DeepEqual(got, want[1:]) && !reflect.DeepEqual(got, want[:1]) || len(got) != 1 {
		t.Fatalf("after one cleanup: %q", got)
	}
	_, v1 := ChallengeRecord("example.test", keys[1])
	if got := query(t, b.addr, name, dns.TypeTXT); got[0] != `"`+v1+`"` {
		t.Fatalf("the other challenge's value went: %q", got)
	}
	if err := cp.CleanUp("example.test", "", keys[1]); err != nil {
		t.Fatal(err)
	}
	if got := b.axfr(t); !reflect.DeepEqual(got, before) {
		t.Errorf("zone not as before:\n%q\nwant\n%q", got, before)
	}

	// A server that stops answering: Present fails within the call
	// deadline and says where.
	dead, err := NewProvider(ProviderConfig{Name: "rfc2136", CallTimeout: 300 * time.Millisecond, Lookup: lookupMap(map[string]string{
		"RFC2136_NAMESERVER": "127.0.0.1:1", "RFC2136_TSIG_KEY": tsigKey, "RFC2136_TSIG_SECRET": tsigSecret,
	})})
	if err != nil {
		t.Fatal(err)
	}
	cp2, _ := NewChallengeProvider(dead, ChallengeOptions{Zone: "example.test", Resolver: &dnsread.Resolver{Servers: []string{b.addr}}})
	start := time.Now()
	err = cp2.Present("example.test", "", "c.key")
	var ce *ChallengeError
	if !errors.As(err, &ce) || ce.Step != StepPresent || !strings.Contains(err.Error(), "rfc2136") {
		t.Errorf("err = %v", err)
	}
	if time.Since(start) > 15*time.Second {
		t.Errorf("took %s", time.Since(start))
	}
}

// TestObserver: every provider call reaches ProviderConfig.Observer once,
// with its provider, op, zone, records and result, and no secret.
func TestObserver(t *testing.T) {
	b := startBIND(t)
	var mu sync.Mutex
	var calls []Call
	build := func(server string) *Client {
		c, err := NewProvider(ProviderConfig{Name: "rfc2136", CallTimeout: 2 * time.Second, Lookup: lookupMap(map[string]string{
			"RFC2136_NAMESERVER": server, "RFC2136_TSIG_KEY": tsigKey, "RFC2136_TSIG_SECRET": tsigSecret,
		}), Observer: func(c Call) { mu.Lock(); calls = append(calls, c); mu.Unlock() }})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx := context.Background()
	if _, err := build(b.addr).GetRecords(ctx, "example.test."); err != nil {
		t.Fatal(err)
	}
	if _, err := build("127.0.0.1:1").GetRecords(ctx, "example.test"); err == nil {
		t.Fatal("a dead server answered")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 2 {
		t.Fatalf("%d calls observed, want 2: %+v", len(calls), calls)
	}
	ok, bad := calls[0], calls[1]
	if ok.Provider != "rfc2136" || ok.Op != "get records" || ok.Zone != "example.test" || ok.Err != nil || ok.Took <= 0 {
		t.Errorf("ok call: %+v", ok)
	}
	if bad.Err == nil || bad.Op != "get records" || strings.Contains(bad.Err.Error(), tsigSecret) {
		t.Errorf("failed call: %+v", bad)
	}
}
