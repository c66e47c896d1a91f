package dnscaa

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libdns/libdns"

	"github.com/tee-ingress/tee-ingress/dnsread"
)

// route53Fake is the slice of the Route 53 REST API that libdns/route53
// v1.6.0 and the adapter call, for one hosted zone, with Route 53's rules:
// CREATE fails on an existing record set, DELETE must name the set exactly,
// UPSERT replaces it.
type route53Fake struct {
	mu      sync.Mutex
	sets    map[[2]string]*fakeSet // (name, type)
	changes []string
}

type fakeSet struct {
	TTL    int64
	Values []string
}

const r53NS = "https://route53.amazonaws.com/doc/2013-04-01/"

type r53Set struct {
	Name   string   `xml:"Name"`
	Type   string   `xml:"Type"`
	TTL    int64    `xml:"TTL"`
	Values []string `xml:"ResourceRecords>ResourceRecord>Value"`
}

func (f *route53Fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("Content-Type", "text/xml")
	fail := func(msg string) {
		w.WriteHeader(400)
		fmt.Fprintf(w, `<?xml version="1.0"?><InvalidChangeBatch xmlns="%s"><Messages><Message>%s</Message></Messages><RequestId>r</RequestId></InvalidChangeBatch>`, r53NS, xmlEscape(msg))
	}
	switch {
	case r.Method == "GET" && strings.HasSuffix(r.URL.Path, "/hostedzonesbyname"):
		fmt.Fprintf(w, `<?xml version="1.0"?><ListHostedZonesByNameResponse xmlns="%s"><HostedZones><HostedZone><Id>/hostedzone/ZTEST</Id><Name>example.test.</Name><CallerReference>c</CallerReference><Config><PrivateZone>false</PrivateZone></Config><ResourceRecordSetCount>%d</ResourceRecordSetCount></HostedZone></HostedZones><DNSName>%s</DNSName><IsTruncated>false</IsTruncated><MaxItems>10</MaxItems></ListHostedZonesByNameResponse>`,
			r53NS, len(f.sets), xmlEscape(r.URL.Query().Get("dnsname")))
	case r.Method == "GET" && strings.HasSuffix(r.URL.Path, "/hostedzone/ZTEST/rrset"):
		var b strings.Builder
		fmt.Fprintf(&b, `<?xml version="1.0"?><ListResourceRecordSetsResponse xmlns="%s"><ResourceRecordSets>`, r53NS)
		keys := make([][2]string, 0, len(f.sets))
		for k := range f.sets {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b [2]string) int { return strings.Compare(a[0]+a[1], b[0]+b[1]) })
		for _, k := range keys {
			s := f.sets[k]
			fmt.Fprintf(&b, `<ResourceRecordSet><Name>%s</Name><Type>%s</Type><TTL>%d</TTL><ResourceRecords>`, xmlEscape(k[0]), k[1], s.TTL)
			for _, v := range s.Values {
				fmt.Fprintf(&b, `<ResourceRecord><Value>%s</Value></ResourceRecord>`, xmlEscape(v))
			}
			b.WriteString(`</ResourceRecords></ResourceRecordSet>`)
		}
		b.WriteString(`</ResourceRecordSets><IsTruncated>false</IsTruncated><MaxItems>300</MaxItems></ListResourceRecordSetsResponse>`)
		fmt.Fprint(w, b.String())
	case r.Method == "POST" && strings.Contains(r.URL.Path, "/hostedzone/ZTEST/rrset"):
		body, _ := io.ReadAll(r.Body)
		var req struct {
			Changes []struct {
				Action string `xml:"Action"`
				Set    r53Set `xml:"ResourceRecordSet"`
			} `xml:"ChangeBatch>Changes>Change"`
		}
		if err := xml.Unmarshal(body, &req); err != nil {
			fail(err.Error())
			return
		}
		for _, c := range req.Changes {
			k := [2]string{strings.ToLower(c.Set.Name), c.Set.Type}
			if !strings.HasSuffix(k[0], ".") {
				k[0] += "."
			}
			seen := map[string]bool{}
			for _, v := range c.Set.Values {
				if seen[v] {
					fail("Duplicate Resource Record: " + v)
					return
				}
				seen[v] = true
			}
			cur := f.sets[k]
			switch c.Action {
			case "CREATE":
				if cur != nil {
					fail(fmt.Sprintf("Tried to create resource record set [name='%s', type='%s'] but it already exists", k[0], k[1]))
					return
				}
				f.sets[k] = &fakeSet{TTL: c.Set.TTL, Values: c.Set.Values}
			case "UPSERT":
				f.sets[k] = &fakeSet{TTL: c.Set.TTL, Values: c.Set.Values}
			case "DELETE":
				if cur == nil || cur.TTL != c.Set.TTL || !reflect.DeepEqual(cur.Values, c.Set.Values) {
					fail(fmt.Sprintf("Tried to delete resource record set [name='%s', type='%s'] but the values provided do not match the current values", k[0], k[1]))
					return
				}
				delete(f.sets, k)
			}
			f.changes = append(f.changes, c.Action+" "+k[0]+" "+k[1])
		}
		fmt.Fprintf(w, `<?xml version="1.0"?><ChangeResourceRecordSetsResponse xmlns="%s"><ChangeInfo><Id>/change/C1</Id><Status>INSYNC</Status><SubmittedAt>2024-01-02T03:04:05Z</SubmittedAt></ChangeInfo></ChangeResourceRecordSetsResponse>`, r53NS)
	default:
		w.WriteHeader(404)
		fmt.Fprintf(w, `<ErrorResponse><Error><Code>NotFound</Code><Message>%s %s</Message></Error></ErrorResponse>`, r.Method, xmlEscape(r.URL.Path))
	}
}

func (f *route53Fake) set(name, typ string) *fakeSet {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sets[[2]string{name, typ}]
	if s == nil {
		return nil
	}
	c := *s
	c.Values = slices.Clone(s.Values)
	return &c
}

func newRoute53(t *testing.T) (*route53Fake, *Client) {
	t.Helper()
	f := &route53Fake{sets: map[[2]string]*fakeSet{
		{"example.test.", "TXT"}:      {300, []string{`"v=spf1 include:_spf.example.net -all"`}},
		{"example.test.", "MX"}:       {300, []string{"10 mail.example.test."}},
		{"apps.example.test.", "CAA"}: {300, []string{`0 iodef "mailto:security@example.test"`}},
	}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	// Both libdns/route53 and the adapter load the SDK's default
	// configuration, which takes the endpoint from here.
	t.Setenv("AWS_ENDPOINT_URL", srv.URL)
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	c, err := NewProvider(ProviderConfig{Name: "route53", CallTimeout: 5 * time.Second, Lookup: lookupMap(map[string]string{
		"AWS_ACCESS_KEY_ID": "AKIATESTTESTTEST", "AWS_SECRET_ACCESS_KEY": "aws-secret-0123456789", "AWS_REGION": "us-east-1",
	})})
	if err != nil {
		t.Fatal(err)
	}
	return f, c
}

func TestRoute53AppendJoinsExistingSets(t *testing.T) {
	f, c := newRoute53(t)
	dnsSrv := startDNS(t, "example.test")
	plan, err := NewPlan(PlanConfig{Domains: []string{"*.apps.example.test"}, GatewayDomain: "gw.example.net", AppID: "abc", Port: 443, CAA: testPolicy()})
	if err != nil {
		t.Fatal(err)
	}
	opts := ApplyOptions{Resolver: &dnsread.Resolver{Servers: []string{dnsSrv.Addr()}}}
	if _, err := Apply(context.Background(), c, plan, opts); err != nil {
		t.Fatal(err)
	}
	// The issuewild joined the iodef's set (a CREATE would have failed).
	want := &fakeSet{300, []string{`0 iodef "mailto:security@example.test"`, `0 issuewild "letsencrypt.org;validationmethods=dns-01;accounturi=https://acme.example/acme/acct/1234"`}}
	if got := f.set("apps.example.test.", "CAA"); !reflect.DeepEqual(got, want) {
		t.Errorf("CAA set = %+v, want %+v", got, want)
	}
	if got := f.set("_dstack-app-address-wildcard.apps.example.test.", "TXT"); got == nil || !reflect.DeepEqual(got.Values, []string{`"abc:443"`}) || got.TTL != 60 {
		t.Errorf("TXT set = %+v", got)
	}
	if got := f.set("*.apps.example.test.", "CNAME"); got == nil || !reflect.DeepEqual(got.Values, []string{"gw.example.net."}) {
		t.Errorf("CNAME set = %+v", got)
	}
	n := len(f.changes)
	if _, err := Apply(context.Background(), c, plan, opts); err != nil {
		t.Fatal(err)
	}
	if len(f.changes) != n {
		t.Errorf("second apply changed: %v", f.changes[n:])
	}

	// Two challenge values at one name, then one removed.
	ctx := context.Background()
	a := libdns.TXT{Name: "_acme-challenge", TTL: TTL, Text: "value-a"}
	// (libdns/route53 trims every quote at the ends of a TXT value it
	// reads, so the quotes here are inside.)
	b := libdns.TXT{Name: "_acme-challenge", TTL: TTL, Text: `value "b" x`}
	for _, r := range []libdns.Record{a, b} {
		if _, err := c.AppendRecords(ctx, "example.test.", []libdns.Record{r}); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.set("_acme-challenge.example.test.", "TXT"); got == nil || !reflect.DeepEqual(got.Values, []string{`"value-a"`, `"value \"b\" x"`}) {
		t.Fatalf("challenge set = %+v", got)
	}
	if _, err := c.DeleteRecords(ctx, "example.test.", []libdns.Record{a}); err != nil {
		t.Fatal(err)
	}
	if got := f.set("_acme-challenge.example.test.", "TXT"); got == nil || !reflect.DeepEqual(got.Values, []string{`"value \"b\" x"`}) {
		t.Fatalf("after delete: %+v", got)
	}
	// Unrelated sets untouched.
	if got := f.set("example.test.", "MX"); !reflect.DeepEqual(got, &fakeSet{300, []string{"10 mail.example.test."}}) {
		t.Errorf("MX = %+v", got)
	}
}

func TestR53Value(t *testing.T) {
	cases := map[string]string{
		"abc:443":   `"abc:443"`,
		`a"b\c`:     `"a\"b\\c"`,
		"tab\there": `"tab\011here"`,
		"é":         `"\303\251"`,
		"":          `""`,
	}
	for in, want := range cases {
		if got := r53Value(libdns.RR{Type: "TXT", Data: in}); got != want {
			t.Errorf("r53Value(%q) = %s, want %s", in, got, want)
		}
	}
	long := strings.Repeat("x", 300)
	if got := r53Value(libdns.RR{Type: "TXT", Data: long}); got != `"`+long[:255]+`" "`+long[255:]+`"` {
		t.Errorf("long value split wrong: %s", got)
	}
	if got := r53Value(libdns.RR{Type: "CAA", Data: `0 issue "x"`}); got != `0 issue "x"` {
		t.Errorf("CAA: %s", got)
	}
}
