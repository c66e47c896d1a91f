package main

import (
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/internal/acmeca"
	"github.com/tee-ingress/tee-ingress/internal/dnsserver"
)

// dnsRecordsOf reads GET /dns-records from the metrics listener.
func dnsRecordsOf(t testing.TB, maddr string) (records []struct{ Type, Name, Value string }, ok bool) {
	resp, err := http.Get("http://" + maddr + "/dns-records")
	if err != nil {
		return nil, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, false
	}
	var body struct {
		Records []struct{ Type, Name, Value string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body.Records, true
}

// TestPersistWaitMode: dns-persist-01 with no DNS credential in the TEE.
// The ingress prints the records and serves them at /dns-records; it does
// not order until they are visible; the test, as the operator, creates
// them; issuance follows, evidence verifies, and the DNS provider API was
// never called. A restart orders nothing.
func TestPersistWaitMode(t *testing.T) {
	bin, _ := binaries(t)
	w := newWorld(t, acmeca.Options{})
	w.dns.Add(dnsserver.MustRR("_.gw.ingress.test. 60 IN A 127.0.0.1"))
	be := newBackend(t, "app")
	state := t.TempDir()
	env := w.env(state, map[string]string{"CHALLENGE_TYPE": "dns-persist-01", "DNS_SETUP_MODE": "wait", "DNS_SETUP_INTERVAL": "100ms",
		"CLOUDFLARE_API_TOKEN": "", "CLOUDFLARE_API_URL": "", "CLOUDFLARE_API_CA": "", "TARGET_ENDPOINT": be.addr,
		"GATEWAY_DOMAIN": "_.gw.ingress.test", "SET_CAA": "true", "METRICS_LISTEN": "127.0.0.1:0",
		"DOMAINS": "*.wild.ingress.test"})
	p := startIngress(t, bin, env, "--listen", "127.0.0.1:0")
	addr, maddr := p.addr(), p.metricsAddr()
	var records []struct{ Type, Name, Value string }
	waitFor(t, "the records at /dns-records", 30*time.Second, func() bool {
		var ok bool
		records, ok = dnsRecordsOf(t, maddr)
		return ok
	}, p.logs)
	if !strings.Contains(p.stdout.String(), "DNS records required for") {
		t.Fatalf("no record block on stdout:\n%s", p.stdout.String())
	}
	kinds := map[string]int{}
	for _, r := range records {
		kinds[r.Type]++
		if r.Type == "TXT" && strings.HasPrefix(r.Name, "_validation-persist.wild.") && !strings.Contains(r.Value, "policy=wildcard") {
			t.Errorf("wildcard persist record without policy=wildcard: %+v", r)
		}
	}
	if kinds["CNAME"] != 2 || kinds["CAA"] != 2 || kinds["TXT"] != 4 {
		t.Fatalf("records %+v: want a CNAME, routing TXT, persist TXT and CAA per name", records)
	}
	if w.ca.Orders() != 0 {
		t.Fatal("ordered before the records were visible")
	}
	for _, r := range records { // the operator creates them
		rr := r.Name + ". 60 IN " + r.Type + " "
		switch r.Type {
		case "TXT":
			rr += `"` + r.Value + `"`
		case "CNAME":
			rr += r.Value + "."
		default:
			rr += r.Value
		}
		w.dns.Add(dnsserver.MustRR(rr))
	}
	p.waitReady()
	// `ingress records` prints the same records, for automation.
	rec := startIngress(t, bin, env, "records", "--listen", addr) // the port the routing TXT names
	if code := rec.wait(30 * time.Second); code != 0 {
		t.Fatalf("ingress records: exit %d\n%s", code, rec.logs())
	}
	var printed struct {
		Records []struct{ Type, Name, Value string }
	}
	if err := json.Unmarshal([]byte(rec.stdout.String()), &printed); err != nil || len(printed.Records) != len(records) {
		t.Fatalf("ingress records printed %d records (%v), /dns-records %d:\n%s", len(printed.Records), err, len(records), rec.stdout.String())
	}
	if n := w.ca.Orders(); n != 2 {
		t.Fatalf("%d orders, want one per domain", n)
	}
	verifyEvidence(t, w, addr, "app."+testZone)
	if n := len(w.cf.Requests()); n != 0 {
		t.Fatalf("the DNS provider API was called %d times", n)
	}
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	p2 := startIngress(t, bin, env, "--listen", "127.0.0.1:0")
	p2.waitReady()
	if n := w.ca.Orders(); n != 2 {
		t.Fatalf("a restart ordered: %d orders", n)
	}
	p2.stop()
}

// TestTLSALPNWaitMode: dstack-ingress 2.3's README example, tls-alpn-01
// with no DNS credential and DNS_SETUP_MODE left at its default (wait):
// the ingress prints the CNAME and the routing TXT naming this instance,
// orders nothing until they are visible, then is validated by pebble
// dialling the listen port.
func TestTLSALPNWaitMode(t *testing.T) {
	bin, _ := binaries(t)
	port := freePort(t)
	w := newWorld(t, acmeca.Options{TLSPort: port})
	w.dns.Add(dnsserver.MustRR("_.gw.ingress.test. 60 IN A 127.0.0.1"))
	be := newBackend(t, "app")
	env := w.env(t.TempDir(), map[string]string{"CHALLENGE_TYPE": "tls-alpn-01", "DNS_SETUP_INTERVAL": "100ms",
		"CLOUDFLARE_API_TOKEN": "", "CLOUDFLARE_API_URL": "", "CLOUDFLARE_API_CA": "", "TARGET_ENDPOINT": be.addr,
		"GATEWAY_DOMAIN": "_.gw.ingress.test", "METRICS_LISTEN": "127.0.0.1:0"})
	p := startIngress(t, bin, env, "--listen", "127.0.0.1:"+strconv.Itoa(port))
	maddr := p.metricsAddr()
	var records []struct{ Type, Name, Value string }
	waitFor(t, "the records at /dns-records", 30*time.Second, func() bool {
		var ok bool
		records, ok = dnsRecordsOf(t, maddr)
		return ok
	}, p.logs)
	if len(records) != 2 || w.ca.Orders() != 0 {
		t.Fatalf("records %+v, %d orders: want the CNAME and the TXT, no order yet", records, w.ca.Orders())
	}
	for _, r := range records {
		if r.Type == "TXT" {
			if !strings.HasPrefix(r.Value, hex.EncodeToString(w.sim.InstanceID())+":") {
				t.Fatalf("routing TXT %q does not name the instance", r.Value)
			}
			w.dns.Add(dnsserver.MustRR(r.Name + `. 60 IN TXT "` + r.Value + `"`))
		} else {
			w.dns.Add(dnsserver.MustRR(r.Name + ". 60 IN CNAME " + r.Value + "."))
		}
	}
	p.waitReady()
	if w.ca.Orders() != 1 || len(w.cf.Requests()) != 0 {
		t.Fatalf("%d orders, %d provider calls", w.ca.Orders(), len(w.cf.Requests()))
	}
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
