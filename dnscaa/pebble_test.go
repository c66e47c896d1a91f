package dnscaa

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/certificate"
	"github.com/go-acme/lego/v4/challenge/dns01"
	"github.com/go-acme/lego/v4/lego"
	legolog "github.com/go-acme/lego/v4/log"
	"github.com/go-acme/lego/v4/registration"
	"github.com/miekg/dns"

	"github.com/tee-ingress/tee-ingress/dnsread"
	"github.com/tee-ingress/tee-ingress/internal/acmeca"
)

type legoUser struct {
	key crypto.PrivateKey
	reg *registration.Resource
}

func (u *legoUser) GetEmail() string                        { return "" }
func (u *legoUser) GetRegistration() *registration.Resource { return u.reg }
func (u *legoUser) GetPrivateKey() crypto.PrivateKey        { return u.key }

// TestIssuanceThroughCloudflare is the path the acme package takes, end to
// end on loopback: register with the CA, pin CAA to the account, obtain a
// certificate for a name and its wildcard through DNS-01 records written by
// libdns/cloudflare into the emulator, with lego configured as the
// ChallengeProvider documentation says.
func TestIssuanceThroughCloudflare(t *testing.T) {
	legolog.Logger = log.New(io.Discard, "", 0)
	// GetChallengeInfo would otherwise ask lego's package-wide resolvers
	// (/etc/resolv.conf) for a CNAME; the acme package sets them with
	// dns01.AddRecursiveNameservers instead.
	t.Setenv("LEGO_DISABLE_CNAME_SUPPORT", "true")

	env := newCFEnv(t, 5*time.Second, "example.test")
	mustAdd(env.dns, unrelated...)
	ca, err := acmeca.Start(acmeca.Options{DNSAddr: env.dns.Addr(), CAAIdentities: []string{"pebble.test"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ca.Close)

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	user := &legoUser{key: key}
	client, err := lego.NewClient(&lego.Config{
		CADirURL: ca.DirectoryURL(), User: user, UserAgent: "tee-ingress-dnscaa-test", HTTPClient: ca.HTTPClient(),
		Certificate: lego.CertificateConfig{KeyType: certcrypto.EC256, Timeout: 30 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	cp := newChallenge(t, env, ChallengeOptions{})
	err = client.Challenge.SetDNS01Provider(cp,
		dns01.WrapPreCheck(func(domain, fqdn, value string, check dns01.PreCheckFunc) (bool, error) { return true, nil }))
	if err != nil {
		t.Fatal(err)
	}
	user.reg, err = client.Registration.Register(registration.RegisterOptions{TermsOfServiceAgreed: true})
	if err != nil {
		t.Fatal(err)
	}

	// CAA first, pinned to the account just registered and to the CA's
	// CAA identity from its directory.
	plan, err := NewPlan(PlanConfig{
		Domains: []string{"*.example.test"},
		CAA:     &dnsread.CAAPolicy{IssuerDomain: "pebble.test", AccountURI: user.reg.URI},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := Apply(ctx, env.client, plan, ApplyOptions{Resolver: env.resolver()}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"example.test", "*.example.test"} {
		set, err := dnsread.LookupCAA(ctx, env.dns.Addr(), name)
		if err != nil {
			t.Fatal(err)
		}
		res := dnsread.CheckCAA(set, dnsread.CAAPolicy{IssuerDomain: "pebble.test", AccountURI: user.reg.URI})
		wantOK := name == "*.example.test" // the apex has only issuewild: any CA may issue for it
		if res.OK() != wantOK {
			t.Errorf("CAA check for %s: OK=%v, problems %v", name, res.OK(), res.Problems)
		}
	}

	before := snapshot(env.dns)
	res, err := client.Certificate.Obtain(certificate.ObtainRequest{Domains: []string{"example.test", "*.example.test"}, Bundle: true})
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	for rest := res.Certificate; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	roots, err := ca.Roots()
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	for _, name := range []string{"example.test", "x.example.test"} {
		if _, err := certs[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter}); err != nil {
			t.Errorf("certificate for %s: %v", name, err)
		}
	}
	names := slices.Clone(certs[0].DNSNames)
	slices.Sort(names)
	if !reflect.DeepEqual(names, []string{"*.example.test", "example.test"}) {
		t.Errorf("certificate names %v", names)
	}
	// Both challenge values were written and removed: the zone is as it
	// was before the order.
	if got := snapshot(env.dns); !reflect.DeepEqual(got, before) {
		t.Errorf("records left behind:\n%q\nwant\n%q", got, before)
	}
	if got := query(t, env.dns.Addr(), "_acme-challenge.example.test", dns.TypeTXT); len(got) != 0 {
		t.Errorf("challenge TXT left: %q", got)
	}
}
