package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/verifycli/report"
)

// TestDomainEndToEnd runs the verifycli binary against a deployment built
// from the real parts: every check passes and the exit status is 0.
func TestDomainEndToEnd(t *testing.T) {
	w := newWorld(t)
	compose := writeFile(t, w.dir, "app-compose.json", w.sim.ComposeJSON())
	r := runCLI(t, w.args("--app-id", hexOf(w.sim.AppID()), "--compose", compose)...)
	if r.code != 0 {
		t.Fatalf("exit %d, want 0:\n%s", r.code, r.dump())
	}
	// The simulator measures no os-image-hash (no KMS measures it): those
	// two checks are skipped; instance id and key provider are reported
	// (info: nothing to compare them with); everything else passes.
	var notPass []string
	for _, c := range r.report.Checks {
		if c.Status != report.StatusPass {
			notPass = append(notPass, c.Status+" "+c.Name)
		}
	}
	want := []string{"info identity.instance_id", "info identity.key_provider", "skip identity.os_image_hash",
		"info live.identity.instance_id", "info live.identity.key_provider", "skip live.identity.os_image_hash"}
	if !slices.Equal(notPass, want) || r.report.Result != report.ResultPass {
		t.Fatalf("result %s, checks not passing %q, want only %q:\n%s", r.report.Result, notPass, want, r.dump())
	}
	for _, name := range []string{checkTLSConnect, checkTLSChain, checkTLSLeafBundle, evidence.CheckFileHash + ":" + evidence.CertFileName(testDomain),
		evidence.CheckQuoteSignature, evidence.CheckQuoteDebug, evidence.CheckReportData, evidence.CheckRTMR + "3",
		evidence.CheckAppID, evidence.CheckComposeHash, checkLiveQuote, prefixLive + evidence.CheckReportData, prefixLive + "identity",
		checkCAA, checkCTQuery, checkCTCertificates} {
		if c := r.check(t, name); c.Status != report.StatusPass {
			t.Errorf("%s: %s, want pass", name, c.Status)
		}
	}
	if got := r.check(t, evidence.CheckAppID).Got; got != hexOf(w.sim.AppID()) {
		t.Errorf("app id %s, want %s", got, hexOf(w.sim.AppID()))
	}
	if r.report.Identity == nil || r.report.Identity.ComposeHash != hexOf(w.sim.ComposeHash()) {
		t.Errorf("report identity %+v, want compose hash %s", r.report.Identity, hexOf(w.sim.ComposeHash()))
	}
	if r.report.AccountURI != testAccountURI {
		t.Errorf("account %q", r.report.AccountURI)
	}
	if r.report.Certificate == nil || r.report.Certificate.SHA256 != sha256Hex(w.cert.leaf.Raw) {
		t.Errorf("certificate %+v, want the served leaf", r.report.Certificate)
	}
	if len(r.report.Nonce) != 64 {
		t.Errorf("nonce %q, want 64 hex characters", r.report.Nonce)
	}
	// The live quote's report_data carries the nonce the report names.
	if got := r.check(t, prefixLive+evidence.CheckReportData).Got; !strings.HasSuffix(got, r.report.Nonce) {
		t.Errorf("live report_data %s does not end with the nonce %s", got, r.report.Nonce)
	}
	// CT: the current certificate matched and was confirmed by its key.
	if got := r.check(t, checkCTCertificates).Got; !strings.Contains(got, "2 unexpired, 2 matched and confirmed, 0 unknown") {
		t.Errorf("ct.certificates got %q", got)
	}
	if r.stderr != "" {
		t.Errorf("stderr %q, want nothing", r.stderr)
	}

	// The same run, for people: a numbered checklist, no colour (not a terminal).
	text := runCLI(t, slices.DeleteFunc(w.args(), func(s string) bool { return s == "--json" })...)
	if text.code != 0 || !strings.HasPrefix(text.stdout, "verifycli domain https://app.example.test (connecting to ") || !strings.Contains(text.stdout, " 1. PASS  tls.connect: ") ||
		!strings.Contains(text.stdout, "result: PASS under a TEST/simulator root: not a TEE (") || strings.Contains(text.stdout, "\x1b[") {
		t.Fatalf("checklist (exit %d):\n%s", text.code, text.stdout)
	}
}

// TestDomainStrict: --strict makes the skipped os-image-hash checks fail
// the run, and the report says so; without an expected identity it also
// fails identity.compared, and with one that check is absent.
func TestDomainStrict(t *testing.T) {
	w := newWorld(t)
	r := runCLI(t, w.args("--strict", "--app-id", hexOf(w.sim.AppID()))...)
	if r.code != 1 || r.report.Result != report.ResultFail || !r.report.Strict || r.report.Summary.Fail != 0 || r.report.Summary.Skip != 2 {
		t.Fatalf("exit %d, result %s, summary %+v; want exit 1, fail, strict, 2 skipped, 0 failed:\n%s", r.code, r.report.Result, r.report.Summary, r.dump())
	}
	r = runCLI(t, w.args("--strict")...)
	if c := r.check(t, checkIdentityCompared); c.Status != report.StatusFail || !strings.Contains(c.Hint, "--app-id") || r.report.Summary.Fail != 1 {
		t.Fatalf("--strict without an expected identity: %+v, summary %+v", c, r.report.Summary)
	}
	text := runCLI(t, slices.DeleteFunc(w.args("--strict", "--app-id", hexOf(w.sim.AppID())), func(s string) bool { return s == "--json" })...)
	if text.code != 1 || !strings.Contains(text.stdout, "result: FAIL (") || !strings.Contains(text.stdout, "--strict counts warnings and skips as failures") {
		t.Fatalf("exit %d, checklist:\n%s", text.code, text.stdout)
	}
}

// TestDomainUnderWildcard: a name served by the deployment's wildcard
// certificate is compared with cert-*.<parent>.pem; the wildcard's CAA set
// (issuewild) is what must pin the account, and the name's own set, which
// does not pin it, is only a warning.
func TestDomainUnderWildcard(t *testing.T) {
	w := newWorld(t)
	now := time.Now()
	wc := w.ca.issue(t, nil, now.Add(-time.Hour), now.Add(60*24*time.Hour), "*."+testZone)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := w.pub.Publish(ctx, evidence.BundleInput{Account: accountJSON(testAccountURI), Primary: "*." + testZone,
		Certs: map[string][]byte{"*." + testZone: wc.chainPEM}}); err != nil {
		t.Fatal(err)
	}
	c := wc.tlsCert()
	w.serveCert.Store(&c)
	w.dns.Remove(caaPin(testDomain, "issue", pinValue(testAccountURI)))
	w.dns.Add(caaPin(testZone, "issuewild", pinValue(testAccountURI)))
	w.ct.Add(wc.leaf)

	r := runCLI(t, w.args()...)
	if r.code != 0 {
		t.Fatalf("exit %d:\n%s", r.code, r.dump())
	}
	if c := r.check(t, checkTLSLeafBundle); c.Status != report.StatusPass || !strings.Contains(c.Detail, "cert-*.example.test.pem") {
		t.Errorf("leaf: %+v", c)
	}
	if c := r.check(t, checkCAA); c.Status != report.StatusPass || !strings.HasPrefix(c.Want, "issuewild ") {
		t.Errorf("dns.caa: %+v, want a pass on issuewild", c)
	}
	if c := r.check(t, checkCAA+":"+testDomain); c.Status != report.StatusWarn || !strings.Contains(c.Detail, "no issue records") {
		t.Errorf("dns.caa:%s: %+v, want a warning that the name itself is not pinned", testDomain, c)
	}
	// The wildcard, and app.example.test's certificate (two rows), which the history still lists.
	if c := r.check(t, checkCTCertificates); c.Status != report.StatusPass || !strings.HasPrefix(c.Got, "3 unexpired, 3 matched") {
		t.Errorf("ct: %+v", c)
	}
}
