package main

import (
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/dnsread"
)

// FuzzParseCTEntries: the CT API's answer is untrusted. Accepted input has
// parsed validity times and hex serials, and survives a round trip.
func FuzzParseCTEntries(f *testing.F) {
	f.Add([]byte(`[{"issuer_ca_id":16418,"issuer_name":"C=US, O=Let's Encrypt, CN=R3","common_name":"app.example.com","name_value":"app.example.com\nwww.app.example.com","id":2549490984,"entry_timestamp":"2020-03-07T00:14:48.255","not_before":"2020-03-06T23:14:48","not_after":"2020-06-04T23:14:48","serial_number":"03b5914e5f28724457a5a51ad2c494d040f6","result_count":4}]`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`[{"id":1,"not_before":"2025-01-01T00:00:00Z","not_after":"2025-02-01T00:00:00+02:00","serial_number":"0"}]`))
	f.Add([]byte(`{"error":"rate limited"}`))
	f.Add([]byte(`<html>502</html>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := parseCTEntries(b)
		if err != nil {
			return
		}
		for _, e := range es {
			if e.SerialNumber == "" {
				t.Fatalf("accepted an entry without a serial: %+v", e)
			}
			if e.notAfter.Location() != time.UTC || e.notBefore.Location() != time.UTC {
				t.Fatalf("times not in UTC: %v %v", e.notBefore, e.notAfter)
			}
			_ = e.names()
			_ = e.describe()
			_ = normSerial(e.SerialNumber)
		}
		again, err := json.Marshal(es)
		if err != nil {
			t.Fatal(err)
		}
		es2, err := parseCTEntries(again)
		if err != nil || len(es2) != len(es) {
			t.Fatalf("round trip: %v (%d entries, want %d)", err, len(es2), len(es))
		}
		for i := range es {
			if es[i].ID != es2[i].ID || es[i].SerialNumber != es2[i].SerialNumber || !es[i].notAfter.Equal(es2[i].notAfter) {
				t.Fatalf("round trip changed entry %d: %+v != %+v", i, es[i], es2[i])
			}
		}
	})
}

// FuzzParseAcmeInfo: a gateway's acme-info is untrusted. Accepted input has
// an https account URI and keys that parse, and survives a round trip.
func FuzzParseAcmeInfo(f *testing.F) {
	spki := "3059301306072a8648ce3d020106082a8648ce3d03010703420004c4f549537658be7b381577c5afebb2f630ba9b0d6b4f10bfd5ee6c9c5e697bafa3827a6b1c0274ff8fbb493fb8dff09d2b716b558529b9857c602ced91a6f43c"
	f.Add([]byte(`{"account_uri":"https://acme-v02.api.letsencrypt.org/acme/acct/1","account_quote":"{}","quoted_hist_keys":[{"public_key":"` + spki + `","quote":"{\"quote\":\"00\"}","attestation":""}]}`))
	f.Add([]byte(`{"account_uri":"https://acme.example/acct/2","account_quote":"","quoted_hist_keys":[{"public_key":"` + spki + `","quote":""}],"hist_keys":["` + spki + `"],"active_cert":"","base_domain":"gw.example"}`))
	f.Add([]byte(`{"account_uri":"http://x","quoted_hist_keys":[]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ai, err := parseAcmeInfo(b)
		if err != nil {
			return
		}
		if u, err := url.Parse(ai.AccountURI); err != nil || u.Scheme != "https" || len(ai.QuotedHistKeys) == 0 {
			t.Fatalf("accepted %q", b)
		}
		for _, k := range ai.QuotedHistKeys {
			if len(k.spki) == 0 {
				t.Fatalf("accepted a key without SPKI: %+v", k)
			}
		}
		again, err := json.Marshal(ai)
		if err != nil {
			t.Fatal(err)
		}
		ai2, err := parseAcmeInfo(again)
		if err != nil || ai2.AccountURI != ai.AccountURI || len(ai2.QuotedHistKeys) != len(ai.QuotedHistKeys) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// FuzzCAAIssuer: issuer inference never panics and returns a lowercase
// domain only from a record naming the account.
func FuzzCAAIssuer(f *testing.F) {
	f.Add("https://acme.example/acct/1", `pebble.letsencrypt.org;accounturi=https://acme.example/acct/1`)
	f.Add("https://acme.example/acct/1", `evil.example; accounturi=https://acme.example/acct/2`)
	f.Fuzz(func(t *testing.T, account, value string) {
		set := &dnsread.CAASet{Name: "example.com.", Records: []dnsread.CAARecord{{Tag: "issue", Value: value}}}
		issuer, how := caaIssuer("", account, set)
		if issuer != "" && how == "unknown" {
			t.Fatalf("issuer %q with how %q", issuer, how)
		}
	})
}
