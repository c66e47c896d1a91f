package cfemu

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/tee-ingress/tee-ingress/internal/dnsserver"
)

// FuzzRecordWrite posts arbitrary bytes as a record body. The emulator must
// answer every body with a JSON envelope and never panic, and a record it
// accepts must be in the store and read back through the API unchanged.
func FuzzRecordWrite(f *testing.F) {
	for _, seed := range []string{
		`{"type":"TXT","name":"_acme-challenge","content":"\"abc\"","ttl":60,"data":{"tag":""}}`,
		`{"type":"CAA","name":"@","content":"0 issue \"letsencrypt.org\"","data":{"flags":0,"tag":"issue","value":"letsencrypt.org"}}`,
		`{"type":"MX","name":"@","content":"mail.example.test","priority":10}`,
		`{"type":"CNAME","name":"www","content":"gw.example.test.","proxied":true}`,
		`{"type":"SRV","name":"_sip._tcp","data":{"priority":1,"weight":2,"port":5060,"target":"sip.example.test"}}`,
		`{"type":"A","name":"*.wild","content":"192.0.2.1","ttl":1}`,
		`{"type":"HINFO","name":"h","content":"\"cpu\" \"os\""}`,
		`{"type":"TXT","name":"t","content":"\"a\\\\b\" c"}`,
		`[]`, `null`, `{"ttl":-1}`,
	} {
		f.Add([]byte(seed))
	}
	store, err := dnsserver.Start("example.test")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	e := New(store, token)
	f.Cleanup(e.Close)
	path := apiPrefix + "/zones/" + ZoneID("example.test") + "/dns_records"

	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest("POST", path, strings.NewReader(string(body)))
		req.Header.Set("Authorization", "Bearer "+token)
		w := httptest.NewRecorder()
		e.ServeHTTP(w, req)
		var env struct {
			Success bool            `json:"success"`
			Errors  []cfError       `json:"errors"`
			Result  json.RawMessage `json:"result"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &env); err != nil {
			t.Fatalf("HTTP %d body is not JSON: %v\n%s", w.Code, err, w.Body.Bytes())
		}
		if w.Code != http.StatusOK {
			if env.Success || len(env.Errors) == 0 {
				t.Fatalf("HTTP %d with success=%v errors=%v", w.Code, env.Success, env.Errors)
			}
			return
		}
		var rec apiRecord
		if err := json.Unmarshal(env.Result, &rec); err != nil {
			t.Fatal(err)
		}
		rrtype := dns.StringToType[rec.Type]
		if len(store.Records(rec.Name+".", rrtype)) == 0 {
			t.Fatalf("accepted record %+v is not in the store", rec)
		}
		get := httptest.NewRequest("GET", path+"/"+rec.ID, nil)
		get.Header.Set("Authorization", "Bearer "+token)
		w2 := httptest.NewRecorder()
		e.ServeHTTP(w2, get)
		var again struct {
			Result apiRecord `json:"result"`
		}
		if err := json.Unmarshal(w2.Body.Bytes(), &again); err != nil || w2.Code != 200 {
			t.Fatalf("reading back %s: HTTP %d %v", rec.ID, w2.Code, err)
		}
		if again.Result.Content != rec.Content || again.Result.Name != rec.Name || again.Result.TTL != rec.TTL {
			t.Fatalf("read back %+v, created %+v", again.Result, rec)
		}
		// Remove it so the store does not grow without bound.
		del := httptest.NewRequest("DELETE", path+"/"+rec.ID, nil)
		del.Header.Set("Authorization", "Bearer "+token)
		w3 := httptest.NewRecorder()
		e.ServeHTTP(w3, del)
		if w3.Code != 200 {
			t.Fatalf("deleting %s: HTTP %d %s", rec.ID, w3.Code, w3.Body.Bytes())
		}
	})
}
