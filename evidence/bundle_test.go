package evidence

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestBuildBundle(t *testing.T) {
	p := newTestPKI(t)
	in := testInput(t, p)
	q := newUnsignedQuoter(t)
	b, err := BuildBundle(context.Background(), q, in)
	if err != nil {
		t.Fatal(err)
	}
	wantNames := []string{AccountFile, CertFile, "cert-*.example.com.pem", "cert-api.example.org.pem", "cert-example.com.pem", HistoryFile, SHA256SumFile, QuoteFile}
	if !slices.Equal(b.Names(), wantNames) {
		t.Fatalf("names %q, want %q", b.Names(), wantNames)
	}
	sums, _ := b.File(SHA256SumFile)
	var want strings.Builder
	for _, n := range wantNames[:6] {
		f, _ := b.File(n)
		h := sha256.Sum256(f)
		want.WriteString(hex.EncodeToString(h[:]) + "  " + n + "\n")
	}
	if string(sums) != want.String() {
		t.Fatalf("sha256sum.txt:\n%s\nwant:\n%s", sums, want.String())
	}
	if a, _ := b.File(AccountFile); string(a) != testAccount {
		t.Fatal("acme-account.json is not published verbatim")
	}
	primary, _ := b.File(CertFile)
	if c, _ := b.File("cert-example.com.pem"); !bytes.Equal(primary, c) {
		t.Fatal("cert.pem is not the primary's chain")
	}
	// The chain is published as given (canonical PEM input), leaf first.
	if !bytes.Equal(primary, in.Certs["example.com"]) {
		t.Fatal("chain changed")
	}
	digest := sha256.Sum256(sums)
	if b.SumsDigest() != digest {
		t.Fatal("SumsDigest")
	}
	qj, _ := b.File(QuoteFile)
	pq, err := ParseQuoteJSON(qj)
	if err != nil {
		t.Fatal(err)
	}
	tq, _ := ParseTDQuote(pq.Quote)
	if !bytes.Equal(tq.ReportData[:32], digest[:]) || [32]byte(tq.ReportData[32:]) != [32]byte{} {
		t.Fatalf("report_data %x, want %x || zeros", tq.ReportData, digest)
	}
	if len(b.History()) != 3 {
		t.Fatalf("history has %d entries", len(b.History()))
	}
	for _, n := range b.Names() {
		f, _ := b.File(n)
		if bytes.Contains(f, []byte("PRIVATE KEY")) {
			t.Fatalf("%s contains PRIVATE KEY", n)
		}
		if d, _ := b.SHA256(n); d != sha256.Sum256(f) {
			t.Fatalf("SHA256(%s)", n)
		}
	}
	// The unsigned quote passes every check but the TDX signature.
	pb, _ := ParseBundle(b.Files())
	cs := VerifyBundle(pb, VerifyOptions{})
	if got := failedNames(cs); !slices.Equal(got, []string{CheckQuoteSignature}) {
		t.Fatalf("failed checks %v, want only the signature%s", got, dumpChecks(cs))
	}
}

func TestBuildBundleCanonicalisesPEM(t *testing.T) {
	p := newTestPKI(t)
	in := testInput(t, p)
	chain := in.Certs["example.com"]
	in.Certs["example.com"] = append([]byte("subject=CN=example.com\nissuer=CN=test\n"), chain...)
	b, err := BuildBundle(context.Background(), newUnsignedQuoter(t), in)
	if err != nil {
		t.Fatal(err)
	}
	if f, _ := b.File(CertFile); !bytes.Equal(f, chain) {
		t.Fatalf("text around PEM blocks was published:\n%s", f)
	}
}

func TestBuildBundleRejectsBadInput(t *testing.T) {
	p := newTestPKI(t)
	other, _ := p.chain(t, "other.example.net")
	wild, _ := p.chain(t, "*.example.com")
	key := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1, 2, 3}})
	cases := []struct {
		name string
		edit func(in *BundleInput)
		want string
	}{
		{"no account", func(in *BundleInput) { in.Account = nil }, "acme-account.json"},
		{"account without uri", func(in *BundleInput) { in.Account = []byte(`{"body":{}}`) }, `"uri" missing`},
		{"account with key", func(in *BundleInput) {
			in.Account = []byte(`{"body":{},"uri":"https://ca/1","key":"-----BEGIN PRIVATE KEY-----"}`)
		}, "PRIVATE KEY"},
		{"no certs", func(in *BundleInput) { in.Certs = nil }, "no certificates"},
		{"primary missing", func(in *BundleInput) { in.Primary = "missing.example.com" }, "has no certificate chain"},
		{"primary invalid", func(in *BundleInput) { in.Primary = "Example.COM" }, "primary domain"},
		{"domain invalid", func(in *BundleInput) { in.Certs["bad/../x"] = other }, `character "/"`},
		{"key in chain", func(in *BundleInput) { in.Certs["example.com"] = append(bytes.Clone(in.Certs["example.com"]), key...) }, "PRIVATE KEY"},
		{"other block", func(in *BundleInput) {
			in.Certs["example.com"] = append(bytes.Clone(in.Certs["example.com"]), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1}})...)
		}, "only CERTIFICATE blocks"},
		{"not pem", func(in *BundleInput) { in.Certs["example.com"] = []byte("hello") }, "no PEM CERTIFICATE block"},
		{"garbage after", func(in *BundleInput) {
			in.Certs["example.com"] = append(bytes.Clone(in.Certs["example.com"]), "-----BEGIN"...)
		}, "after the last PEM block"},
		{"bad der", func(in *BundleInput) {
			in.Certs["example.com"] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 1, 2}})
		}, "certificate 1"},
		{"intermediate first", func(in *BundleInput) { in.Certs["example.com"] = pemCert(p.inter.Raw) }, "is a CA; want the leaf first"},
		{"chain order", func(in *BundleInput) {
			in.Certs["example.com"] = append(bytes.Clone(in.Certs["example.com"]), pemCert(p.inter.Raw)...)
		}, "is not signed by certificate"},
		{"wrong domain", func(in *BundleInput) { in.Certs["example.com"] = other }, "not example.com"},
		{"wildcard for apex", func(in *BundleInput) { in.Certs["example.com"] = wild }, "not example.com"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := testInput(t, p)
			c.edit(&in)
			q := newUnsignedQuoter(t)
			_, err := BuildBundle(context.Background(), q, in)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
			if q.calls.Load() != 0 {
				t.Fatal("quoted invalid input")
			}
		})
	}
}

func TestWildcardSANCoversSubdomain(t *testing.T) {
	p := newTestPKI(t)
	in := testInput(t, p)
	wild, _ := p.chain(t, "*.example.com")
	in.Certs["api.example.com"] = wild
	if _, err := BuildBundle(context.Background(), newUnsignedQuoter(t), in); err != nil {
		t.Fatal(err)
	}
	in.Certs["a.b.example.com"] = wild
	if _, err := BuildBundle(context.Background(), newUnsignedQuoter(t), in); err == nil {
		t.Fatal("a one-label wildcard accepted for two labels")
	}
}

func TestBuildBundleFailsClosed(t *testing.T) {
	p := newTestPKI(t)
	cases := []struct {
		name string
		set  func(u *unsignedQuoter)
		want string
	}{
		{"agent error", func(u *unsignedQuoter) { u.err = errTestQuoter }, "unreachable"},
		{"stale report_data", func(u *unsignedQuoter) { u.mutate = func(rd *[64]byte) { rd[0] ^= 1 } }, "quote carries report_data"},
		{"nonzero second half", func(u *unsignedQuoter) { u.mutate = func(rd *[64]byte) { rd[63] = 1 } }, "quote carries report_data"},
		{"error body", func(u *unsignedQuoter) { u.rawHook = func([]byte) []byte { return []byte(`{"error":"boom"}`) } }, `"quote" missing`},
		{"html body", func(u *unsignedQuoter) { u.rawHook = func([]byte) []byte { return []byte(`<html>502</html>`) } }, "want a JSON object"},
		{"field disagrees", func(u *unsignedQuoter) {
			u.rawHook = func(b []byte) []byte {
				i := bytes.Index(b, []byte(`"report_data":"`)) + len(`"report_data":"`)
				// Change the first hex digit, whatever it is (it is 'f' one
				// time in sixteen).
				if b[i] == 'f' {
					b[i] = '0'
				} else {
					b[i] = 'f'
				}
				return b
			}
		}, "report_data field"},
		{"key in response", func(u *unsignedQuoter) {
			u.rawHook = func(b []byte) []byte {
				return bytes.Replace(b, []byte(`"vm_config":"`), []byte(`"vm_config":"PRIVATE KEY`), 1)
			}
		}, "PRIVATE KEY"},
		{"log does not replay", func(u *unsignedQuoter) { u.log = strings.Replace(u.log, `"app-id"`, `"app-iD"`, 1) }, "does not replay"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q := newUnsignedQuoter(t)
			q.set(c.set)
			_, err := BuildBundle(context.Background(), q, testInput(t, p))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
			if !errors.Is(err, ErrQuote) {
				t.Fatalf("err %v is not ErrQuote", err)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := BuildBundle(ctx, newUnsignedQuoter(t), testInput(t, p)); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	if _, err := BuildBundle(context.Background(), nil, testInput(t, p)); err == nil {
		t.Fatal("nil quoter")
	}
}

func TestHistoryMerge(t *testing.T) {
	p := newTestPKI(t)
	in := testInput(t, p)
	q := newUnsignedQuoter(t)
	b1, err := BuildBundle(context.Background(), q, in)
	if err != nil {
		t.Fatal(err)
	}
	// Renew the primary; drop api.example.org.
	renewed, leaf := p.chain(t, "example.com", "www.example.com")
	in.Certs["example.com"] = renewed
	delete(in.Certs, "api.example.org")
	in.History = b1.History()
	b2, err := BuildBundle(context.Background(), q, in)
	if err != nil {
		t.Fatal(err)
	}
	h := b2.History()
	if len(h) != 4 {
		t.Fatalf("history has %d entries, want 4 (3 old + renewed)", len(h))
	}
	last := h[len(h)-1]
	fp := sha256.Sum256(leaf.Raw)
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	if last.SHA256 != hex.EncodeToString(fp[:]) || last.SPKISHA256 != hex.EncodeToString(spki[:]) ||
		last.Serial != hex.EncodeToString(leaf.SerialNumber.Bytes()) || !last.NotBefore.Equal(leaf.NotBefore) ||
		!last.NotAfter.Equal(leaf.NotAfter) || !slices.Equal(last.Domains, []string{"example.com", "www.example.com"}) {
		t.Fatalf("entry %+v does not describe the renewed leaf", last)
	}
	for i := 1; i < len(h); i++ {
		if h[i].NotBefore.Before(h[i-1].NotBefore) {
			t.Fatal("history not ordered by not_before")
		}
	}
	// Merging again adds nothing and encodes to the same bytes.
	b3, _ := BuildBundle(context.Background(), q, BundleInput{Account: in.Account, Primary: in.Primary, Certs: in.Certs, History: slices.Concat(h, h)})
	h2, _ := b2.File(HistoryFile)
	h3, _ := b3.File(HistoryFile)
	if !bytes.Equal(h2, h3) {
		t.Fatalf("history not stable:\n%s\n%s", h2, h3)
	}
	parsed, err := ParseHistory(h3)
	if err != nil || len(parsed) != 4 {
		t.Fatalf("ParseHistory: %v %d", err, len(parsed))
	}
	if !strings.Contains(string(h3), `"not_before": "`+leaf.NotBefore.UTC().Format(time.RFC3339)+`"`) {
		t.Fatalf("history times not RFC 3339 UTC:\n%s", h3)
	}
}

func TestParseHistoryErrors(t *testing.T) {
	h := strings.Repeat("ab", 32)
	cases := []struct{ in, want string }{
		{`[]`, "want {"},
		{`{"certificates":[],"x":1}`, "unknown field"},
		{`{"certificates":[{"sha256":"zz","spki_sha256":"` + h + `","serial":"01"}]}`, "sha256 must be"},
		{`{"certificates":[{"sha256":"` + strings.ToUpper(h) + `","spki_sha256":"` + h + `","serial":"01"}]}`, "sha256 must be"},
		{`{"certificates":[{"sha256":"` + h + `","spki_sha256":"ab","serial":"01"}]}`, "spki_sha256 must be"},
		{`{"certificates":[{"sha256":"` + h + `","spki_sha256":"` + h + `","serial":""}]}`, "serial"},
		{`{"certificates":[]} {}`, "trailing"},
	}
	for _, c := range cases {
		if _, err := ParseHistory([]byte(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseHistory(%q) = %v, want %q", c.in, err, c.want)
		}
	}
}
