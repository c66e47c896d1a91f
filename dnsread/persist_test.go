package dnsread

import (
	"strings"
	"testing"
	"time"
)

func TestPersistValueRoundTrip(t *testing.T) {
	until := time.Unix(1900000000, 0).UTC()
	p := Persist{Issuer: "letsencrypt.org", AccountURI: "https://acme-v02.api.letsencrypt.org/acme/acct/123", Wildcard: true, Until: until}
	v := p.Value()
	if v != "letsencrypt.org;accounturi=https://acme-v02.api.letsencrypt.org/acme/acct/123;policy=wildcard;persistUntil=1900000000" {
		t.Fatalf("value %q", v)
	}
	got, err := ParsePersist(v)
	if err != nil || got != p {
		t.Fatalf("parse(%q) = %+v, %v", v, got, err)
	}
	// The draft's spacing and a policy in capitals read the same.
	got, err = ParsePersist(" letsencrypt.org ; accounturi=https://x/acct/1 ; policy=WILDCARD")
	if err != nil || !got.Wildcard || got.AccountURI != "https://x/acct/1" {
		t.Fatalf("spaced: %+v, %v", got, err)
	}
	if got, _ := ParsePersist("letsencrypt.org;accounturi=https://x/1;policy=subdomains"); got.Wildcard {
		t.Fatal("an unknown policy counts as none")
	}
	if PersistName("*.example.com") != "_validation-persist.example.com." || PersistName("example.com.") != "_validation-persist.example.com." {
		t.Fatal("PersistName")
	}
}

func TestCheckPersist(t *testing.T) {
	const acct = "https://ca.test/acct/1"
	now := time.Unix(1800000000, 0)
	want := Persist{Issuer: "ca.test", AccountURI: acct}
	wild := Persist{Issuer: "ca.test", AccountURI: acct, Wildcard: true}
	for _, c := range []struct {
		name  string
		txts  []string
		want  Persist
		error string // "" = authorised
	}{
		{"exact", []string{"ca.test;accounturi=" + acct}, want, ""},
		{"beside other CAs", []string{"other.test;accounturi=https://o/1", "ca.test; accounturi=" + acct}, want, ""},
		{"none", nil, want, "no record for issuer ca.test"},
		{"only another CA", []string{"other.test;accounturi=" + acct}, want, "no record for issuer ca.test"},
		{"other account", []string{"ca.test;accounturi=https://ca.test/acct/2"}, want, `names account "https://ca.test/acct/2"`},
		{"wildcard without policy", []string{"ca.test;accounturi=" + acct}, wild, "lacks policy=wildcard"},
		{"wildcard", []string{"ca.test;accounturi=" + acct + ";policy=wildcard"}, wild, ""},
		{"expired", []string{"ca.test;accounturi=" + acct + ";persistUntil=1700000000"}, want, "expired at persistUntil 2023-11-14"},
		{"not expired", []string{"ca.test;accounturi=" + acct + ";persistUntil=1900000000"}, want, ""},
		{"malformed", []string{"ca.test;accounturi"}, want, "is malformed"},
		{"bad persistUntil", []string{"ca.test;accounturi=" + acct + ";persistUntil=soon"}, want, "persistUntil=\"soon\" is not a Unix time"},
	} {
		err := CheckPersist("_validation-persist.app.test.", c.txts, c.want, now)
		switch {
		case c.error == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.error != "" && (err == nil || !strings.Contains(err.Error(), c.error)):
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.error)
		case c.error != "" && !strings.Contains(err.Error(), "_validation-persist.app.test. TXT must be \""+c.want.Value()+"\""):
			t.Errorf("%s: %v does not say what the record must be", c.name, err)
		}
	}
}

// FuzzParsePersist: TXT values from DNS never panic the parser, and what it
// accepts comes back the same from its own Value.
func FuzzParsePersist(f *testing.F) {
	f.Add("letsencrypt.org;accounturi=https://x/1;policy=wildcard;persistUntil=1900000000")
	f.Add(" ca ; accounturi = u ")
	f.Add(";")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePersist(s)
		if err != nil {
			return
		}
		q, err := ParsePersist(p.Value())
		if err != nil || q.Issuer != p.Issuer || q.Wildcard != p.Wildcard || !q.Until.Equal(p.Until) {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, p, p.Value(), q, err)
		}
	})
}
