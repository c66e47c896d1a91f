package dnssetup

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/dnsread"
	"github.com/tee-ingress/tee-ingress/internal/dnsserver"
	"github.com/tee-ingress/tee-ingress/internal/dohserver"
)

const account = "https://ca.test/acct/1"

// twoResolvers are two real DoH resolvers, each in front of its own DNS
// server: records written to one only are "not propagated" to the other.
func twoResolvers(t *testing.T) (fast, slow *dnsserver.Server, rs []Resolver, slowDoH *dohserver.Server) {
	t.Helper()
	for _, p := range []**dnsserver.Server{&fast, &slow} {
		s, err := dnsserver.Start("example.test")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		*p = s
		doh := dohserver.Start(s.Addr())
		t.Cleanup(doh.Close)
		slowDoH = doh
		rs = append(rs, Resolver{Name: doh.URL(), R: &dnsread.Resolver{Servers: []string{doh.URL()}, HTTPClient: doh.Client(), Timeout: 2 * time.Second}})
	}
	return fast, slow, rs, slowDoH
}

var want = []Record{
	{Type: "CNAME", Name: "app.example.test", Value: "_.gw.example.test", Note: "gateway"},
	{Type: "TXT", Name: "_dstack-app-address.app.example.test", Value: "abcd:443"},
	{Type: "TXT", Name: "_validation-persist.app.example.test", Value: "ca.test;accounturi=" + account},
	{Type: "CAA", Name: "app.example.test", Value: `0 issue "ca.test;validationmethods=dns-persist-01;accounturi=` + account + `"`},
}

func addAll(s *dnsserver.Server) {
	s.Add(dnsserver.MustRR(`app.example.test. 60 IN CNAME _.gw.example.test.`),
		dnsserver.MustRR(`_dstack-app-address.app.example.test. 60 IN TXT "abcd:443"`),
		dnsserver.MustRR(`_validation-persist.app.example.test. 60 IN TXT "ca.test;accounturi=`+account+`"`),
		dnsserver.MustRR(`app.example.test. 60 IN CAA 0 issue "ca.test;validationmethods=dns-persist-01;accounturi=`+account+`"`))
}

// TestWait: the wait ends once both resolvers show every record, not when
// one does; what is missing is said per resolver.
func TestWait(t *testing.T) {
	fast, slow, rs, slowDoH := twoResolvers(t)
	w := &Waiter{Resolvers: rs, Interval: 50 * time.Millisecond, Timeout: 20 * time.Second,
		Permission: &dnsread.CAAPolicy{IssuerDomain: "ca.test", AccountURI: account, ValidationMethods: []string{"dns-persist-01"}},
		Domains:    []string{"app.example.test"}}
	ctx := context.Background()
	results, err := w.Check(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if r.OK || !strings.Contains(r.Why, rs[0].Name) || !strings.Contains(r.Why, rs[1].Name) {
			t.Fatalf("before any record: %+v", r)
		}
	}
	addAll(fast)
	results, _ = w.Check(ctx, want)
	for _, r := range results {
		if r.OK || strings.Contains(r.Why, rs[0].Name) || !strings.Contains(r.Why, rs[1].Name) {
			t.Fatalf("with one resolver lagging: %+v", r)
		}
	}
	done := make(chan error, 1)
	before := slowDoH.Queries()
	go func() { done <- w.Wait(ctx, want) }()
	// Three more checks reach the lagging resolver; the wait is still on.
	for deadline := time.Now().Add(10 * time.Second); slowDoH.Queries() < before+3*int64(len(want)); {
		select {
		case err := <-done:
			t.Fatalf("the wait ended while a resolver lags: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the wait stopped checking")
		}
		time.Sleep(10 * time.Millisecond)
	}
	addAll(slow)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the wait did not end once every resolver showed the records")
	}
}

// TestWaitRefusedAndTimeout: a CAA set refusing the account on one
// resolver stops the wait at once; records never created end it at the
// timeout, naming them.
func TestWaitRefusedAndTimeout(t *testing.T) {
	fast, slow, rs, _ := twoResolvers(t)
	addAll(fast)
	slow.Add(dnsserver.MustRR(`app.example.test. 60 IN CAA 0 issue "other-ca.test"`))
	w := &Waiter{Resolvers: rs, Interval: 50 * time.Millisecond, Timeout: 20 * time.Second,
		Permission: &dnsread.CAAPolicy{IssuerDomain: "ca.test", AccountURI: account, ValidationMethods: []string{"dns-persist-01"}},
		Domains:    []string{"app.example.test"}}
	var refused *Refused
	if err := w.Wait(context.Background(), want); !errors.As(err, &refused) || !strings.Contains(err.Error(), "other-ca.test") || !strings.Contains(err.Error(), rs[1].Name) {
		t.Fatalf("conflicting CAA: %v", err)
	}
	w.Permission, w.Timeout = nil, 300*time.Millisecond
	var missing *Missing
	err := w.Wait(context.Background(), want[1:2])
	if !errors.As(err, &missing) || !strings.Contains(err.Error(), "_dstack-app-address.app.example.test TXT abcd:443") {
		t.Fatalf("timeout: %v", err)
	}
}
