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

	"github.com/go-acme/lego/v4/challenge/dns01"
	"github.com/miekg/dns"

	"github.com/tee-ingress/tee-ingress/dnsread"
	"github.com/tee-ingress/tee-ingress/internal/cfemu"
)

func newChallenge(t *testing.T, env *cfEnv, opts ChallengeOptions) *ChallengeProvider {
	t.Helper()
	opts.Resolver = env.resolver()
	if opts.CheckServers == nil {
		opts.CheckServers = []string{env.dns.Addr()}
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = 20 * time.Millisecond
	}
	if opts.PropagationTimeout == 0 {
		opts.PropagationTimeout = 5 * time.Second
	}
	opts.Logger = env.logger
	cp, err := NewChallengeProvider(env.client, opts)
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// challengeTXT lists the TXT values at name, over DNS.
func challengeTXT(t *testing.T, env *cfEnv, name string) []string {
	t.Helper()
	got := query(t, env.dns.Addr(), name, dns.TypeTXT)
	slices.Sort(got)
	return got
}

func TestChallengeRecordMatchesLego(t *testing.T) {
	// Keep lego from asking its package-wide resolvers for a CNAME.
	t.Setenv("LEGO_DISABLE_CNAME_SUPPORT", "true")
	for _, d := range []string{"example.test", "a.b.example.test"} {
		info := dns01.GetChallengeInfo(d, "token.thumbprint")
		name, value := ChallengeRecord(d, "token.thumbprint")
		if name != info.FQDN || value != info.Value {
			t.Errorf("ChallengeRecord(%s) = %s %s, lego says %s %s", d, name, value, info.FQDN, info.Value)
		}
	}
}

func TestChallengePresentCleanUp(t *testing.T) {
	env := newCFEnv(t, 5*time.Second, "example.test")
	mustAdd(env.dns, unrelated...)
	before := snapshot(env.dns)
	cp := newChallenge(t, env, ChallengeOptions{})

	name, value := ChallengeRecord("app.example.test", "tok.key")
	if err := cp.Present("app.example.test", "tok", "tok.key"); err != nil {
		t.Fatal(err)
	}
	if got := challengeTXT(t, env, name); !reflect.DeepEqual(got, []string{`"` + value + `"`}) {
		t.Fatalf("TXT %s = %q, want %q", name, got, value)
	}
	if ttl := env.dns.Records(name, dns.TypeTXT)[0].Header().Ttl; ttl != 60 {
		t.Errorf("TTL %d", ttl)
	}
	if err := cp.CleanUp("app.example.test", "tok", "tok.key"); err != nil {
		t.Fatal(err)
	}
	if got := challengeTXT(t, env, name); len(got) != 0 {
		t.Errorf("after cleanup: %q", got)
	}
	if got := snapshot(env.dns); !reflect.DeepEqual(got, before) {
		t.Errorf("zone changed:\n%q\nwant\n%q", got, before)
	}
	// Cleaning up again, or what was never presented, touches nothing.
	n := len(env.writes())
	if err := cp.CleanUp("app.example.test", "tok", "tok.key"); err != nil {
		t.Fatal(err)
	}
	if err := cp.CleanUp("other.example.test", "x", "x.key"); err != nil {
		t.Fatal(err)
	}
	if len(env.writes()) != n {
		t.Errorf("cleanup of nothing wrote: %v", env.writes()[n:])
	}
	if timeout, interval := cp.Timeout(); timeout != 5*time.Second || interval > time.Second {
		t.Errorf("Timeout() = %s, %s", timeout, interval)
	}
}

// TestChallengeConcurrentSameName: example.test and *.example.test put two
// values at _acme-challenge.example.test at once; neither cleanup may take
// the other's value.
func TestChallengeConcurrentSameName(t *testing.T) {
	env := newCFEnv(t, 5*time.Second, "example.test")
	cp := newChallenge(t, env, ChallengeOptions{})
	name, _ := ChallengeRecord("example.test", "")
	keys := []string{"tokA.key", "tokB.key", "tokC.key"}
	var values []string
	for _, k := range keys {
		_, v := ChallengeRecord("example.test", k)
		values = append(values, `"`+v+`"`)
	}
	slices.Sort(values)

	run := func(f func(k string) error) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, len(keys))
		for _, k := range keys {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- f(k)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	for round := 0; round < 2; round++ {
		run(func(k string) error { return cp.Present("example.test", "", k) })
		if got := challengeTXT(t, env, name); !reflect.DeepEqual(got, values) {
			t.Fatalf("round %d: TXT = %q, want %q", round, got, values)
		}
		// Clean up one: the others stay.
		if err := cp.CleanUp("example.test", "", keys[0]); err != nil {
			t.Fatal(err)
		}
		if got := challengeTXT(t, env, name); !reflect.DeepEqual(got, withoutValue(values, keys[0])) {
			t.Fatalf("round %d: after one cleanup TXT = %q", round, got)
		}
		// Present it again while the rest are cleaned up concurrently.
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := cp.Present("example.test", "", keys[0]); err != nil {
				t.Error(err)
			}
		}()
		run(func(k string) error {
			if k == keys[0] {
				return nil
			}
			return cp.CleanUp("example.test", "", k)
		})
		wg.Wait()
		_, v0 := ChallengeRecord("example.test", keys[0])
		if got := challengeTXT(t, env, name); !reflect.DeepEqual(got, []string{`"` + v0 + `"`}) {
			t.Fatalf("round %d: TXT = %q, want only %s", round, got, v0)
		}
		if err := cp.CleanUp("example.test", "", keys[0]); err != nil {
			t.Fatal(err)
		}
		if got := challengeTXT(t, env, name); len(got) != 0 {
			t.Fatalf("round %d: left %q", round, got)
		}
	}
}

func withoutValue(values []string, key string) []string {
	_, v := ChallengeRecord("example.test", key)
	var out []string
	for _, x := range values {
		if x != `"`+v+`"` {
			out = append(out, x)
		}
	}
	return out
}

func TestChallengeFollowsCNAME(t *testing.T) {
	env := newCFEnv(t, 5*time.Second, "example.test", "acme.example.net")
	// A least-privilege token: only the challenge zone.
	env.cf.ScopeToZones("acme.example.net")
	mustAdd(env.dns, `_acme-challenge.app.example.test. 300 IN CNAME app.acme.example.net.`)
	cp := newChallenge(t, env, ChallengeOptions{})
	_, value := ChallengeRecord("app.example.test", "k")
	if err := cp.Present("*.app.example.test", "", "k"); err != nil {
		t.Fatal(err)
	}
	if got := challengeTXT(t, env, "app.acme.example.net"); !reflect.DeepEqual(got, []string{`"` + value + `"`}) {
		t.Fatalf("TXT at the CNAME target = %q", got)
	}
	// The CA's view: the name resolves through the CNAME to the value.
	m, err := dnsread.QueryServer(context.Background(), env.dns.Addr(), "_acme-challenge.app.example.test", dns.TypeTXT, false, time.Second)
	if err != nil || len(m.Answer) != 2 {
		t.Fatalf("resolving through the CNAME: %v %v", m, err)
	}
	if err := cp.CleanUp("*.app.example.test", "", "k"); err != nil {
		t.Fatal(err)
	}
	if got := challengeTXT(t, env, "app.acme.example.net"); len(got) != 0 {
		t.Fatalf("left %q", got)
	}
}

func TestChallengeDelegationZone(t *testing.T) {
	env := newCFEnv(t, 5*time.Second, "example.test", "deleg.example.net")
	env.cf.ScopeToZones("deleg.example.net")
	cp := newChallenge(t, env, ChallengeOptions{DelegationZone: "deleg.example.net"})
	// Without the operator's CNAME: a clear error, nothing written.
	err := cp.Present("app.example.test", "", "k")
	var ce *ChallengeError
	if !errors.As(err, &ce) || ce.Step != StepPresent || !strings.Contains(err.Error(),
		"_acme-challenge.app.example.test. CNAME _acme-challenge.app.example.test.deleg.example.net.") {
		t.Fatalf("err = %v, want a present error naming the CNAME to create", err)
	}
	if w := env.writes(); len(w) != 0 {
		t.Fatalf("wrote: %v", w)
	}
	mustAdd(env.dns, `_acme-challenge.app.example.test. 60 IN CNAME _acme-challenge.app.example.test.deleg.example.net.`)
	if err := cp.Present("app.example.test", "", "k"); err != nil {
		t.Fatal(err)
	}
	_, value := ChallengeRecord("app.example.test", "k")
	if got := challengeTXT(t, env, "_acme-challenge.app.example.test.deleg.example.net"); !reflect.DeepEqual(got, []string{`"` + value + `"`}) {
		t.Fatalf("TXT = %q", got)
	}
	if err := cp.CleanUp("app.example.test", "", "k"); err != nil {
		t.Fatal(err)
	}
}

func TestChallengeNeverPropagates(t *testing.T) {
	env := newCFEnv(t, 5*time.Second, "example.test")
	before := snapshot(env.dns)
	env.dns.SetHide(func(rr dns.RR) bool { return strings.HasPrefix(rr.Header().Name, "_acme-challenge.") })
	cp := newChallenge(t, env, ChallengeOptions{PropagationTimeout: 700 * time.Millisecond})
	start := time.Now()
	err := cp.Present("app.example.test", "", "k")
	took := time.Since(start)
	var ce *ChallengeError
	if !errors.As(err, &ce) || ce.Step != StepPropagation || ce.Domain != "app.example.test" {
		t.Fatalf("err = %v, want a propagation error for app.example.test", err)
	}
	if !strings.Contains(err.Error(), "not visible within 700ms") || !strings.Contains(err.Error(), env.dns.Addr()) {
		t.Errorf("err %q does not say what was not visible where", err)
	}
	if took < 700*time.Millisecond || took > 15*time.Second {
		t.Errorf("took %s", took)
	}
	// Polled more than once, fewer times than a busy loop would.
	if q := env.dns.Queries(); q < 3 || q > 100 {
		t.Errorf("%d queries", q)
	}
	env.dns.SetHide(nil)
	if got := snapshot(env.dns); !reflect.DeepEqual(got, before) {
		t.Errorf("record left behind:\n%q", got)
	}
}

func TestChallengeFaults(t *testing.T) {
	const timeout = 400 * time.Millisecond
	cases := []struct {
		name  string
		fault func(*http.Request) cfemu.Fault
		step  string
		want  string
	}{
		{"500 on write", faultOn(http.MethodPost, cfemu.Fault{Status: 500}), StepPresent, "HTTP 500"},
		{"hang on write", faultOn(http.MethodPost, cfemu.Fault{Hang: true}), StepPresent, "no answer within 400ms"},
		{"hang on read", faultOn(http.MethodGet, cfemu.Fault{Hang: true}), StepPresent, "no answer within 400ms"},
		{"garbled answer", faultOn(http.MethodGet, cfemu.Fault{Body: "<html>"}), StepPresent, "invalid character"},
		{"403", func(*http.Request) cfemu.Fault { return cfemu.Fault{Status: 403} }, StepPresent, "HTTP 403"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := newCFEnv(t, timeout, "example.test")
			before := snapshot(env.dns)
			cp := newChallenge(t, env, ChallengeOptions{})
			env.cf.SetFault(c.fault)
			start := time.Now()
			err := cp.Present("app.example.test", "", "k")
			var ce *ChallengeError
			if !errors.As(err, &ce) || ce.Step != c.step || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "app.example.test") {
				t.Fatalf("err = %v, want step %s and %q", err, c.step, c.want)
			}
			if took := time.Since(start); took > 10*timeout+10*time.Second {
				t.Errorf("took %s", took)
			}
			if strings.Contains(err.Error(), cfToken) || strings.Contains(env.logs.String(), cfToken) {
				t.Error("token leaked")
			}
			env.cf.SetFault(nil)
			if got := snapshot(env.dns); !reflect.DeepEqual(got, before) {
				t.Errorf("record left behind:\n%q", got)
			}
		})
	}

	// A cleanup that fails says so, with the step.
	env := newCFEnv(t, timeout, "example.test")
	cp := newChallenge(t, env, ChallengeOptions{})
	if err := cp.Present("app.example.test", "", "k"); err != nil {
		t.Fatal(err)
	}
	env.cf.SetFault(faultOn(http.MethodDelete, cfemu.Fault{Status: 500}))
	err := cp.CleanUp("app.example.test", "", "k")
	var ce *ChallengeError
	if !errors.As(err, &ce) || ce.Step != StepCleanup || !strings.Contains(err.Error(), "HTTP 500") {
		t.Fatalf("cleanup err = %v", err)
	}
}

func TestChallengeBadInput(t *testing.T) {
	env := newCFEnv(t, time.Second, "example.test")
	cp := newChallenge(t, env, ChallengeOptions{})
	err := cp.Present("bad..name", "", "k")
	var ce *ChallengeError
	if !errors.As(err, &ce) || ce.Step != StepPresent || !errors.Is(err, ErrInvalidName) {
		t.Fatalf("err = %v", err)
	}
	if _, err := NewChallengeProvider(env.client, ChallengeOptions{DelegationZone: "x"}); !isField(err, "DelegationZone") {
		t.Errorf("bad delegation zone: %v", err)
	}
	if _, err := NewChallengeProvider(nil, ChallengeOptions{}); err == nil {
		t.Error("nil provider accepted")
	}
	// A name outside every zone of the provider.
	err = cp.Present("app.other.test", "", "k")
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "app.other.test") {
		t.Errorf("err = %v", err)
	}
	if len(env.writes()) != 0 {
		t.Errorf("wrote: %v", env.writes())
	}
}
