package dnsread

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tee-ingress/tee-ingress/internal/dnsserver"
	"github.com/tee-ingress/tee-ingress/internal/dohserver"
)

// TestDoH: TXT and CAA lookups through a real RFC 8484 resolver on loopback
// in front of the test DNS server; a non-DoH endpoint is a clear error.
func TestDoH(t *testing.T) {
	d, err := dnsserver.Start("example.test")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.Add(dnsserver.MustRR(`_validation-persist.app.example.test. 60 IN TXT "ca.test;accounturi=https://ca.test/a/1"`))
	d.Add(dnsserver.MustRR(`app.example.test. 60 IN CAA 0 issue "ca.test;accounturi=https://ca.test/a/1"`))
	doh := dohserver.Start(d.Addr())
	defer doh.Close()
	r := &Resolver{Servers: []string{doh.URL()}, HTTPClient: doh.Client()}
	txt, err := r.LookupTXT(context.Background(), "_validation-persist.app.example.test")
	if err != nil || len(txt) != 1 || txt[0] != "ca.test;accounturi=https://ca.test/a/1" {
		t.Fatalf("TXT over DoH: %q, %v", txt, err)
	}
	set, err := r.LookupCAA(context.Background(), "app.example.test")
	if err != nil || len(set.Records) != 1 {
		t.Fatalf("CAA over DoH: %+v, %v", set, err)
	}
	if doh.Queries() < 2 {
		t.Fatalf("%d queries reached the DoH server", doh.Queries())
	}
	// A JSON endpoint (dns.google/resolve style) is not RFC 8484.
	json := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/dns-json")
		w.Write([]byte(`{"Status":0}`))
	}))
	defer json.Close()
	r = &Resolver{Servers: []string{json.URL + "/resolve"}, HTTPClient: json.Client()}
	if _, err := r.LookupTXT(context.Background(), "app.example.test"); err == nil || !strings.Contains(err.Error(), "RFC 8484") {
		t.Fatalf("JSON endpoint: %v", err)
	}
}
