package proxy

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"
)

func TestCertStore(t *testing.T) {
	f := newFixture(t)
	var zero CertStore
	if _, err := zero.GetCertificate(&tls.ClientHelloInfo{ServerName: "app.test"}); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("zero CertStore: %v, want ErrNoCertificate", err)
	}
	for name, want := range map[string]string{
		"app.test":      "app.test",
		"APP.Test.":     "app.test",
		"other.test":    "other.test",
		"a.wild.test":   "*.wild.test",
		"A.WILD.TEST":   "*.wild.test",
		"a.b.wild.test": "app.test", // one label only: primary
		"wild.test":     "app.test",
		"unknown.test":  "app.test",
		"":              "app.test",
	} {
		c, err := f.store.GetCertificate(&tls.ClientHelloInfo{ServerName: name})
		if err != nil || c != f.certs[want] {
			t.Errorf("GetCertificate(%q) = %s, %v; want the %s certificate", name, certName(c), err, want)
		}
	}

	// A wildcard can be the primary.
	var s CertStore
	mustf(t, s.Set("*.WILD.test", map[string]*tls.Certificate{"*.wild.test": f.certs["*.wild.test"]}), "wildcard primary")
	if c, _ := s.GetCertificate(&tls.ClientHelloInfo{ServerName: "x.test"}); c != f.certs["*.wild.test"] {
		t.Error("wildcard primary not served for an unknown name")
	}

	// Bad input is rejected and leaves the previous set in place.
	for _, tc := range []struct {
		primary string
		certs   map[string]*tls.Certificate
		want    string
	}{
		{"missing.test", map[string]*tls.Certificate{"app.test": f.certs["app.test"]}, `primary "missing.test" is not one of the names given (app.test)`},
		{"app.test", map[string]*tls.Certificate{"app.test": nil}, "no private key"},
		{"app.test", map[string]*tls.Certificate{"app.test": {Certificate: [][]byte{{1}}}}, "no private key"},
		{"app.test", map[string]*tls.Certificate{"app.test": f.certs["app.test"], "*.*.test": f.certs["app.test"]}, "whole first label"},
		{"app.test", map[string]*tls.Certificate{"app.test": f.certs["app.test"], "a b.test": f.certs["app.test"]}, `character " "`},
		{"", nil, "primary"},
	} {
		err := f.store.Set(tc.primary, tc.certs)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Set(%q, ...) = %v, want error mentioning %q", tc.primary, err, tc.want)
		}
	}
	if c, _ := f.store.GetCertificate(&tls.ClientHelloInfo{ServerName: "other.test"}); c != f.certs["other.test"] {
		t.Error("a rejected Set changed the served certificates")
	}

	// Challenge certificates.
	if _, ok := f.store.ChallengeCertificate("app.test"); ok {
		t.Fatal("challenge pending before SetChallengeCert")
	}
	f.store.SetChallengeCert("App.Test", f.certs["other.test"])
	if c, ok := f.store.ChallengeCertificate("app.test."); !ok || c != f.certs["other.test"] {
		t.Fatal("challenge certificate not found")
	}
	f.store.ClearChallengeCert("APP.test")
	if _, ok := f.store.ChallengeCertificate("app.test"); ok {
		t.Fatal("challenge still pending after ClearChallengeCert")
	}

	// CertFunc adapts a plain function.
	var cf CertSource = CertFunc(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return f.certs["other.test"], nil })
	if c, _ := cf.GetCertificate(nil); c != f.certs["other.test"] {
		t.Fatal("CertFunc")
	}
}

// certName names a certificate for a failure message; c may be nil.
func certName(c *tls.Certificate) string {
	if c == nil || c.Leaf == nil {
		return "<none>"
	}
	return c.Leaf.Subject.CommonName
}
