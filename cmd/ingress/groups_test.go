package main

import (
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/internal/acmeca"
)

// TestCertificateGroups: a DOMAINS line of three names issues one
// certificate with those three SANs (one order at the CA), served for each
// name by SNI and published as cert-<name>.pem for each; verifycli domain
// passes for each name and history.json lists the one certificate. A fourth
// name added to the group, on restart, reissues that group and leaves the
// other certificate alone.
func TestCertificateGroups(t *testing.T) {
	bin, _ := binaries(t)
	w := newWorld(t, acmeca.Options{})
	app := newBackend(t, "app")
	state := t.TempDir()
	group := []string{"app." + testZone, "api." + testZone, "docs." + testZone}
	solo := "solo." + testZone
	env := w.env(state, map[string]string{"DOMAIN": "", "DOMAINS": group[0] + " " + group[1] + " " + group[2] + "\n" + solo,
		"TARGET_ENDPOINT": app.addr, "GATEWAY_DOMAIN": "_.gw.ingress.test", "SET_CAA": "true"})
	p := startIngress(t, bin, env, "--listen", "127.0.0.1:0")
	addr := p.addr()
	p.waitReady()

	if n := len(w.ca.Issued()); n != 2 {
		t.Fatalf("%d certificates issued, want 2 (the group's and solo's)", n)
	}
	leaf := x509Leaf(t, servedLeaf(t, addr, group[0], w))
	if !slices.Equal(slices.Sorted(slices.Values(leaf.DNSNames)), slices.Sorted(slices.Values(group))) {
		t.Fatalf("the group's leaf names %v, want %v", leaf.DNSNames, group)
	}
	for _, name := range group {
		if string(servedLeaf(t, addr, name, w)) != string(leaf.Raw) {
			t.Fatalf("%s is served another certificate than the group's", name)
		}
		verifyDomain(t, w, addr, name)
	}
	verifyDomain(t, w, addr, solo)
	soloLeaf := servedLeaf(t, addr, solo, w)
	if string(soloLeaf) == string(leaf.Raw) {
		t.Fatal("solo is served the group's certificate")
	}
	bundle, err := evidence.LoadBundleDir(filepath.Join(state, "evidences", ".current"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range group {
		if l := bundle.Leaf(evidence.CertFileName(name)); l == nil || string(l.Raw) != string(leaf.Raw) {
			t.Fatalf("%s in the bundle is not the group's certificate", evidence.CertFileName(name))
		}
	}
	if h := historyOf(t, state); len(h) != 2 {
		t.Fatalf("history.json lists %d certificates, want 2: %+v", len(h), h)
	}
	if p.stop() != 0 {
		t.Fatalf("exit\n%s", p.logs())
	}

	// A fourth name: the group is ordered again, solo is not.
	env["DOMAINS"] = group[0] + " " + group[1] + " " + group[2] + " www." + testZone + "\n" + solo
	p = startIngress(t, bin, env, "--listen", "127.0.0.1:0")
	addr = p.addr()
	p.waitReady()
	if n := len(w.ca.Issued()); n != 3 {
		t.Fatalf("%d certificates issued after adding a name, want 3 (one more, for the group)", n)
	}
	grown := x509Leaf(t, servedLeaf(t, addr, "www."+testZone, w))
	if len(grown.DNSNames) != 4 || string(servedLeaf(t, addr, group[1], w)) != string(grown.Raw) {
		t.Fatalf("the grown group's leaf names %v", grown.DNSNames)
	}
	if string(servedLeaf(t, addr, solo, w)) != string(soloLeaf) {
		t.Fatal("solo was reissued though its names did not change")
	}
	verifyDomain(t, w, addr, "www."+testZone)
	if h := historyOf(t, state); len(h) != 3 {
		t.Fatalf("history.json lists %d certificates, want 3", len(h))
	}
}

func x509Leaf(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func historyOf(t *testing.T, state string) []evidence.HistoryEntry {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, "evidences", ".current", evidence.HistoryFile))
	if err != nil {
		t.Fatal(err)
	}
	var h []evidence.HistoryEntry
	if err := json.Unmarshal(b, &h); err != nil {
		h, err = evidence.ParseHistory(b)
		if err != nil {
			t.Fatal(err)
		}
	}
	return h
}
