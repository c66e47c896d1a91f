package dnsread

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/internal/dnsserver"
)

func TestResolverLookups(t *testing.T) {
	s := startDNS(t, "example.test", "sub.example.test")
	mustAdd(s,
		`ns1.example.test. 300 IN A 192.0.2.53`,
		`ns1.example.test. 300 IN AAAA 2001:db8::53`,
		`ns1.sub.example.test. 300 IN A 192.0.2.54`,
		`alias.example.test. 300 IN CNAME a.sub.example.test.`,
		`a.sub.example.test. 300 IN CNAME b.sub.example.test.`,
		`loop1.example.test. 300 IN CNAME loop2.example.test.`,
		`loop2.example.test. 300 IN CNAME loop1.example.test.`,
	)
	r := &Resolver{Servers: []string{s.Addr()}, Timeout: time.Second}
	ctx := context.Background()

	got, err := r.AuthoritativeServers(ctx, "example.test")
	if err != nil || !reflect.DeepEqual(got, []string{"192.0.2.53:53", "[2001:db8::53]:53"}) {
		t.Errorf("AuthoritativeServers = %v, %v", got, err)
	}
	if _, err := r.AuthoritativeServers(ctx, "nope.test"); err == nil {
		t.Error("NS of an unserved zone")
	}

	for name, want := range map[string]string{
		"example.test":          "example.test.",
		"deep.www.example.test": "example.test.",
		"x.sub.example.test":    "sub.example.test.",
		"sub.example.test":      "sub.example.test.",
	} {
		if z, err := r.ZoneBySOA(ctx, name); err != nil || z != want {
			t.Errorf("ZoneBySOA(%s) = %s, %v; want %s", name, z, err, want)
		}
	}

	end, chain, err := r.FollowCNAME(ctx, "alias.example.test")
	if err != nil || end != "b.sub.example.test." || !reflect.DeepEqual(chain, []string{"a.sub.example.test.", "b.sub.example.test."}) {
		t.Errorf("FollowCNAME = %s %v %v", end, chain, err)
	}
	if end, _, err := r.FollowCNAME(ctx, "plain.example.test"); err != nil || end != "plain.example.test." {
		t.Errorf("no CNAME: %s %v", end, err)
	}
	if _, _, err := r.FollowCNAME(ctx, "loop1.example.test"); err == nil || !strings.Contains(err.Error(), "loop") {
		t.Errorf("loop: %v", err)
	}
	// A resolver that refuses the first name: an error, not a guess.
	if _, _, err := r.FollowCNAME(ctx, "elsewhere.invalid"); err == nil || !strings.Contains(err.Error(), "REFUSED") {
		t.Errorf("refused: %v", err)
	}

	// A dead server, then a live one: the second answers.
	r2 := &Resolver{Servers: []string{"127.0.0.1:1", s.Addr()}, Timeout: 300 * time.Millisecond}
	if z, err := r2.ZoneBySOA(ctx, "www.example.test"); err != nil || z != "example.test." {
		t.Errorf("fallback to the second server: %s %v", z, err)
	}
}

func mustAdd(s *dnsserver.Server, lines ...string) {
	for _, l := range lines {
		s.Add(dnsserver.MustRR(l))
	}
}

func TestParentName(t *testing.T) {
	if parentName("a.b.c.") != "b.c." || parentName("c.") != "." {
		t.Error("parentName")
	}
}
