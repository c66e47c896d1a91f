package report

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/evidence"
)

func TestNew(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
	cs := []evidence.Check{{Name: "a", Status: evidence.Pass}, {Name: "b", Status: evidence.Warn}, {Name: "c", Status: evidence.Skip}}
	r := New("quote", "q.json", at, false, cs)
	if r.Failed() || r.Result != ResultPass || r.Summary != (Summary{Pass: 1, Warn: 1, Skip: 1}) || r.Schema != SchemaVersion || !r.CheckedAt.Equal(at) || r.CheckedAt.Location() != time.UTC {
		t.Fatalf("%+v", r)
	}
	for i, c := range r.Checks {
		if c.Step != i+1 || c.Name != cs[i].Name || c.Status != string(cs[i].Status) {
			t.Errorf("check %d: %+v", i, c)
		}
	}
	if r := New("quote", "q.json", at, true, cs); !r.Failed() {
		t.Error("strict: warn and skip did not fail the run")
	}
	if r := New("quote", "q.json", at, false, append(cs, evidence.Check{Name: "d", Status: evidence.Fail})); !r.Failed() || r.Summary.Fail != 1 {
		t.Errorf("a failed check did not fail the run: %+v", r.Summary)
	}
}

// TestFieldNames pins the JSON names of every field: they may never change.
func TestFieldNames(t *testing.T) {
	r := New("domain", "https://x.example", time.Unix(0, 0), false, []evidence.Check{{Name: "n", Status: evidence.Fail, Want: "w", Got: "g", Detail: "d", Hint: "h"}})
	r.Connect, r.AccountURI, r.Nonce = "127.0.0.1:1", "https://ca.example/acct/1", "00"
	r.Identity = &Identity{}
	r.Certificate = &Certificate{DNSNames: []string{}}
	r.Layout = "tee-ingress"
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"schema":1,"command":"domain","target":"https://x.example","connect":"127.0.0.1:1","checked_at":"1970-01-01T00:00:00Z","strict":false,"result":"fail",` +
		`"summary":{"pass":0,"fail":1,"warn":0,"skip":0,"info":0},"checks":[{"step":1,"name":"n","status":"fail","want":"w","got":"g","detail":"d","hint":"h"}],` +
		`"identity":{"app_id":"","compose_hash":"","instance_id":"","key_provider":"","os_image_hash":""},` +
		`"certificate":{"sha256":"","spki_sha256":"","subject":"","issuer":"","dns_names":[],"serial":"","not_before":"0001-01-01T00:00:00Z","not_after":"0001-01-01T00:00:00Z"},` +
		`"account_uri":"https://ca.example/acct/1","nonce":"00","layout":"tee-ingress"}`
	if string(b) != want {
		t.Errorf("JSON changed:\n got %s\nwant %s", b, want)
	}
}
