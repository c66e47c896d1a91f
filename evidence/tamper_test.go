package evidence

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
	"testing"
)

// simBundle builds a bundle quoted by the simulator (real signatures under
// its root) and returns its files and the options that verify it.
func simBundle(t *testing.T, pki *testPKI) (map[string][]byte, VerifyOptions, Quoter) {
	t.Helper()
	s := newSim(t, true)
	q := simQuoter{s}
	b, err := BuildBundle(context.Background(), q, testInput(t, pki))
	if err != nil {
		t.Fatal(err)
	}
	return b.Files(), VerifyOptions{TrustedRootsPEM: s.RootPEM(), AppID: hex.EncodeToString(s.AppID()), ComposeJSON: s.ComposeJSON()}, q
}

func TestTamperingDetectedAndNamed(t *testing.T) {
	pki := newTestPKI(t)
	files, opts, q := simBundle(t, pki)
	pb, _ := ParseBundle(files)
	if cs := VerifyBundle(pb, opts); Failed(cs, false) {
		t.Fatalf("untouched bundle fails: %v%s", failedNames(cs), dumpChecks(cs))
	}
	// Another bundle quoted by the same TEE, for swapping parts between bundles.
	otherIn := testInput(t, pki)
	other, err := BuildBundle(context.Background(), q, otherIn)
	if err != nil {
		t.Fatal(err)
	}
	swapped, _ := pki.chain(t, "example.com", "www.example.com")

	cases := []struct {
		name string
		edit func(f map[string][]byte)
		want []string // exactly these checks fail
	}{
		{"cert swapped", func(f map[string][]byte) { f[CertFile] = swapped },
			[]string{CheckFileHash + ":" + CertFile, CheckHistory}},
		{"cert swapped and sha256sum.txt rewritten", func(f map[string][]byte) {
			f[CertFile] = swapped
			f[SHA256SumFile] = rehash(f)
		}, []string{CheckHistory, CheckReportData}},
		{"account URI changed", func(f map[string][]byte) {
			f[AccountFile] = bytes.Replace(f[AccountFile], []byte("acct/12345"), []byte("acct/66666"), 1)
		}, []string{CheckFileHash + ":" + AccountFile}},
		{"file added", func(f map[string][]byte) { f["cert-evil.example.com.pem"] = swapped },
			[]string{CheckFilesListed, CheckCert + ":cert-evil.example.com.pem", CheckHistory}},
		{"unknown file added", func(f map[string][]byte) { f["notes.txt"] = []byte("hi") },
			[]string{CheckFilesListed}},
		{"file removed", func(f map[string][]byte) { delete(f, "cert-api.example.org.pem") },
			[]string{CheckFileHash + ":cert-api.example.org.pem"}},
		{"quote removed", func(f map[string][]byte) { delete(f, QuoteFile) },
			[]string{CheckFilesListed, CheckQuoteJSON}},
		{"sha256sum.txt edited (line dropped)", func(f map[string][]byte) {
			lines := strings.SplitAfter(string(f[SHA256SumFile]), "\n")
			f[SHA256SumFile] = []byte(strings.Join(slices.Delete(lines, 3, 4), ""))
		}, []string{CheckFilesListed, CheckReportData}},
		{"sha256sum.txt edited (one hex digit)", func(f map[string][]byte) {
			s := f[SHA256SumFile]
			s[0] = "01"[boolInt(s[0] == '0')]
		}, []string{CheckFileHash + ":" + AccountFile, CheckReportData}},
		{"sha256sum.txt malformed", func(f map[string][]byte) { f[SHA256SumFile] = append(f[SHA256SumFile], "junk\n"...) },
			[]string{CheckSHA256Sum, CheckFilesListed, CheckReportData}},
		{"quote.json from another bundle", func(f map[string][]byte) { f[QuoteFile], _ = other.File(QuoteFile) },
			[]string{CheckReportData}},
		{"history emptied", func(f map[string][]byte) {
			f[HistoryFile] = EncodeHistory(nil)
			f[SHA256SumFile] = rehash(f)
		}, []string{CheckHistory, CheckReportData}},
		{"private key slipped in", func(f map[string][]byte) {
			f[HistoryFile] = []byte("-----BEGIN PRIVATE KEY-----\n")
		}, []string{CheckFileHash + ":" + HistoryFile, CheckNoPrivateKey, CheckHistory}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := cloneFiles(files)
			c.edit(f)
			pb, err := ParseBundle(f)
			if err != nil {
				t.Fatal(err)
			}
			cs := VerifyBundle(pb, opts)
			got := failedNames(cs)
			slices.Sort(got)
			want := slices.Clone(c.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("failed checks %q, want %q%s", got, want, dumpChecks(cs))
			}
			for _, ch := range cs {
				if ch.Status == Fail && ch.Detail == "" {
					t.Errorf("check %s fails without a detail", ch.Name)
				}
			}
		})
	}

	// A replayed live quote: made for one nonce, presented for another.
	live1 := [32]byte{1}
	rd := BundleReportData(sha256.Sum256(files[SHA256SumFile]), live1)
	lq, err := q.Quote(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	f := cloneFiles(files)
	f[QuoteFile] = lq.Raw
	pb, _ = ParseBundle(f)
	o := opts
	o.Nonce = &live1
	if cs := VerifyBundle(pb, o); Failed(cs, false) {
		t.Fatalf("fresh live quote fails: %v", failedNames(cs))
	}
	live2 := [32]byte{2}
	o.Nonce = &live2
	cs := VerifyBundle(pb, o)
	if got := failedNames(cs); !slices.Equal(got, []string{CheckReportData}) {
		t.Fatalf("replayed nonce: failed %q", got)
	}
	if h := checkByName(t, cs, CheckReportData).Hint; !strings.Contains(h, "another nonce") {
		t.Fatalf("hint %q", h)
	}
	// The published (zero-nonce) quote presented as a live one.
	pb, _ = ParseBundle(files)
	if got := failedNames(VerifyBundle(pb, o)); !slices.Equal(got, []string{CheckReportData}) {
		t.Fatalf("published quote as live: failed %q", got)
	}
}

func TestCertFileForWrongDomain(t *testing.T) {
	pki := newTestPKI(t)
	files, opts, _ := simBundle(t, pki)
	// Swap two domains' files and fix sha256sum.txt: hashes match, names do not.
	f := cloneFiles(files)
	f["cert-api.example.org.pem"], f["cert-example.com.pem"] = f["cert-example.com.pem"], f["cert-api.example.org.pem"]
	f[SHA256SumFile] = rehash(f)
	pb, _ := ParseBundle(f)
	cs := VerifyBundle(pb, opts)
	wantStatus(t, cs, CheckCert+":cert-api.example.org.pem", Fail)
	wantStatus(t, cs, CheckCert+":cert-example.com.pem", Fail)
	wantStatus(t, cs, CheckReportData, Fail)
}

func TestLoadBundleDirErrors(t *testing.T) {
	if _, err := LoadBundleDir(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no files") {
		t.Fatalf("empty dir: %v", err)
	}
	if _, err := LoadBundleDir("/nonexistent/evidence"); err == nil {
		t.Fatal("missing dir")
	}
	if _, err := ParseBundle(nil); err == nil {
		t.Fatal("no files")
	}
}

// rehash rewrites sha256sum.txt for the current files, as a forger would.
func rehash(f map[string][]byte) []byte {
	old, _ := ParseSHA256Sum(f[SHA256SumFile])
	var lines []SumLine
	for _, l := range old {
		if data, ok := f[l.Name]; ok {
			lines = append(lines, SumLine{Name: l.Name, SHA256: sha256.Sum256(data)})
		}
	}
	return EncodeSHA256Sum(lines)
}

func cloneFiles(f map[string][]byte) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range f {
		out[k] = bytes.Clone(v)
	}
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
