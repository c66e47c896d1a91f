package acme

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-acme/lego/v4/challenge/dns01"
	"github.com/miekg/dns"

	"github.com/tee-ingress/tee-ingress/dnscaa"
	"github.com/tee-ingress/tee-ingress/dnsread"
	"github.com/tee-ingress/tee-ingress/internal/acmeca"
	"github.com/tee-ingress/tee-ingress/internal/bind9"
)

const bindZone = `$TTL 300
@                IN SOA   ns1.example.test. hostmaster.example.test. 1 7200 3600 1209600 60
@                IN NS    ns1.example.test.
ns1              IN A     127.0.0.1
@                IN MX    10 mail.example.test.
@                IN TXT   "v=spf1 -all"
@                IN CAA   0 iodef "mailto:security@example.test"
`

// TestIssuanceThroughRFC2136 issues with every record, challenge and CAA
// pin, written by TSIG-signed dynamic update into a real BIND9, which pebble
// then queries to validate.
func TestIssuanceThroughRFC2136(t *testing.T) {
	named, err := bind9.Start(bind9.Options{Dir: t.TempDir(), Zone: "example.test", ZoneFile: bindZone})
	if errors.Is(err, bind9.ErrNotInstalled) {
		t.Skipf("%v: this test needs it", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { named.Close() })
	ca, err := acmeca.Start(acmeca.Options{DNSAddr: named.Addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ca.Close)
	vars := map[string]string{"RFC2136_NAMESERVER": named.Addr, "RFC2136_TSIG_KEY": named.KeyName,
		"RFC2136_TSIG_SECRET": named.Secret, "RFC2136_TSIG_ALGORITHM": "hmac-sha256"}
	dp, err := dnscaa.NewProvider(dnscaa.ProviderConfig{Name: "auto", CallTimeout: 5 * time.Second,
		Lookup: func(k string) (string, bool) { v, ok := vars[k]; return v, ok }})
	if err != nil {
		t.Fatal(err)
	}
	if dp.Name() != "rfc2136" {
		t.Fatalf("auto picked %q, want rfc2136", dp.Name())
	}
	resolver := &dnsread.Resolver{Servers: []string{named.Addr}}
	cp, err := dnscaa.NewChallengeProvider(dp, dnscaa.ChallengeOptions{Zone: "example.test", Resolver: resolver,
		CheckServers: []string{named.Addr}, PropagationTimeout: 5 * time.Second, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	m, err := New(Config{
		DirectoryURL: ca.DirectoryURL(),
		Keys:         &FileKeySource{Path: filepath.Join(state, "account.key")},
		StateDir:     state,
		HTTPClient:   ca.HTTPClient(),
		Solver:       cp,
		DNS01Options: []dns01.ChallengeOption{
			dns01.AddRecursiveNameservers([]string{named.Addr}),
			dns01.WrapPreCheck(func(string, string, string, dns01.PreCheckFunc) (bool, error) { return true, nil }),
		},
		CAA: &dnscaa.Pinner{Provider: dp, Apply: dnscaa.ApplyOptions{Zone: "example.test", Resolver: resolver}},
	})
	if err != nil {
		t.Fatal(err)
	}
	domains := []string{"app.example.test", "*.example.test"}
	c, err := m.Ensure(context.Background(), domains)
	if err != nil {
		t.Fatalf("%v\nnamed log:\n%s", err, named.Log())
	}
	w := &world{ca: ca}
	w.checkIssued(t, c, domains)

	// The pin, read back from BIND over DNS, names the registered account.
	set, err := dnsread.LookupCAA(context.Background(), named.Addr, "*.example.test")
	if err != nil {
		t.Fatal(err)
	}
	if chk := dnsread.CheckCAA(set, dnsread.CAAPolicy{IssuerDomain: "pebble.letsencrypt.org", AccountURI: m.AccountURI(),
		ValidationMethods: []string{"dns-01"}}); !chk.OK() {
		t.Fatalf("CAA in BIND does not pin the account: %+v", chk)
	}
	// No challenge record is left in BIND.
	q := new(dns.Msg)
	q.SetQuestion("_acme-challenge.app.example.test.", dns.TypeTXT)
	r, _, err := (&dns.Client{Timeout: time.Second}).Exchange(q, named.Addr)
	if err != nil || len(r.Answer) != 0 {
		t.Fatalf("challenge TXT left behind: %v %v", r, err)
	}
	if strings.Contains(named.Log(), "update failed") {
		t.Fatalf("named refused an update:\n%s", named.Log())
	}
}
