package evidence

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sort"
	"strings"
)

// Limits on bundles read from disk or the network.
const (
	maxBundleFiles    = 1024
	maxBundleFileSize = 4 << 20
)

// ParsedBundle is a bundle as a verifier received it, each part parsed on
// its own so that one broken file fails its checks without hiding the others.
type ParsedBundle struct {
	// Files holds every file by name, sha256sum.txt and quote.json included.
	// A nil value is a name a server offered but sha256sum.txt does not
	// list, which FetchBundle does not download.
	Files map[string][]byte

	Sums    []SumLine // sha256sum.txt
	SumsErr error
	Account *Account // acme-account.json
	// AccountErr is non-nil when acme-account.json is missing or invalid.
	AccountErr error
	Quote      *Quote // quote.json
	QuoteErr   error
	// Chains holds the parsed chain of each certificate file (cert.pem,
	// cert-<domain>.pem), leaf first; ChainErrs the files that did not parse.
	Chains    map[string][]*x509.Certificate
	ChainErrs map[string]error
	History   []HistoryEntry // history.json
	// HistoryErr is fs.ErrNotExist (wrapped) when history.json is absent.
	HistoryErr error
}

// AccountURI is the account URI of acme-account.json, "" if it did not parse.
func (b *ParsedBundle) AccountURI() string {
	if b.Account == nil {
		return ""
	}
	return b.Account.URI
}

// Bundle layouts in the field (ParsedBundle.Layout).
const (
	// LayoutTeeIngress: cert.pem, cert-<domain>.pem for each domain and
	// history.json (this project).
	LayoutTeeIngress = "tee-ingress"
	// LayoutDstackIngress2: cert-<domain>.pem only, no history
	// (dstack-ingress 2.x, multi-domain).
	LayoutDstackIngress2 = "dstack-ingress 2.x"
	// LayoutSingle: cert.pem only (dstack-ingress before 2.0).
	LayoutSingle = "single certificate"
	// LayoutNone: no certificate file at all.
	LayoutNone = "no certificate"
)

// Layout names which of the layouts the bundle's certificate files and
// history follow.
func (b *ParsedBundle) Layout() string {
	hasCert := b.Files[CertFile] != nil
	perDomain := false
	for name, f := range b.Files {
		if _, ok := certFileDomain(name); ok && f != nil {
			perDomain = true
			break
		}
	}
	switch {
	case hasCert && perDomain, perDomain && b.HistoryErr == nil:
		return LayoutTeeIngress
	case perDomain:
		return LayoutDstackIngress2
	case hasCert:
		return LayoutSingle
	}
	return LayoutNone
}

// Leaf returns the leaf certificate of the named certificate file (CertFile
// or CertFileName(domain)), nil if absent or invalid.
func (b *ParsedBundle) Leaf(name string) *x509.Certificate {
	if c := b.Chains[name]; len(c) > 0 {
		return c[0]
	}
	return nil
}

// ParseBundle parses the files of a bundle (from LoadBundleDir, FetchBundle
// or anywhere else). Problems with single files are recorded in the result
// and reported by VerifyBundle; the error is for input that is not a bundle
// at all (no files, too many).
func ParseBundle(files map[string][]byte) (*ParsedBundle, error) {
	if len(files) == 0 {
		return nil, errors.New("parsing bundle: no files")
	}
	if len(files) > maxBundleFiles {
		return nil, fmt.Errorf("parsing bundle: %d files, at most %d accepted", len(files), maxBundleFiles)
	}
	b := &ParsedBundle{Files: files, Chains: map[string][]*x509.Certificate{}, ChainErrs: map[string]error{}}
	missing := func(name string) error { return fmt.Errorf("%s: %w", name, fs.ErrNotExist) }
	if f, ok := files[SHA256SumFile]; ok {
		b.Sums, b.SumsErr = ParseSHA256Sum(f)
	} else {
		b.SumsErr = missing(SHA256SumFile)
	}
	if f, ok := files[AccountFile]; ok {
		b.Account, b.AccountErr = ParseAccount(f)
	} else {
		b.AccountErr = missing(AccountFile)
	}
	if f, ok := files[QuoteFile]; ok {
		b.Quote, b.QuoteErr = ParseQuoteJSON(f)
	} else {
		b.QuoteErr = missing(QuoteFile)
	}
	if f, ok := files[HistoryFile]; ok {
		b.History, b.HistoryErr = ParseHistory(f)
	} else {
		b.HistoryErr = missing(HistoryFile)
	}
	for name, f := range files {
		if _, isCert := certFileDomain(name); f == nil || !isCert && name != CertFile {
			continue // nil: offered by a server, not listed, not downloaded
		}
		chain, err := ParseChainPEM(f)
		if err != nil {
			b.ChainErrs[name] = err
			continue
		}
		b.Chains[name] = chain
	}
	return b, nil
}

// LoadBundleDir reads a bundle from a folder: every regular file whose name
// does not start with a dot, following symlinks inside the folder. For a
// live EVIDENCE_DIR pass EVIDENCE_DIR/.current: the folder is opened once,
// so all files come from one version even while a new one is swapped in (if
// that version is pruned meanwhile, the error wraps fs.ErrNotExist: read
// again).
func LoadBundleDir(dir string) (*ParsedBundle, error) {
	files, err := ReadBundleDir(dir)
	if err != nil {
		return nil, err
	}
	return ParseBundle(files)
}

// VerifyBundle checks a bundle completely: every sha256sum.txt line against
// its file, every file listed, no private key, the account record, the
// certificate chains, the history, and the quote (signature, debug TD,
// report_data = SHA-256(sha256sum.txt) || zeros or || opts.Nonce, event log
// replay, identity values against opts).
func VerifyBundle(b *ParsedBundle, opts VerifyOptions) []Check {
	return bundleChecks(b, opts, true)
}

// bundleChecks is VerifyBundle; with tdx false it leaves out what needs a
// real quote (signature, debug TD, event log), for tests with unsigned quotes.
func bundleChecks(b *ParsedBundle, opts VerifyOptions, tdx bool) []Check {
	var cs []Check
	if b.SumsErr != nil {
		cs = append(cs, Check{Name: CheckSHA256Sum, Status: Fail, Detail: b.SumsErr.Error(),
			Hint: "sha256sum.txt must list every file as \"<sha256>  <name>\"; without it nothing binds the files to the quote"})
	} else {
		cs = append(cs, Check{Name: CheckSHA256Sum, Status: Pass, Got: fmt.Sprintf("%d files listed", len(b.Sums)), Detail: "sha256sum.txt is well formed"})
	}
	listed := map[string]bool{}
	for _, l := range b.Sums {
		listed[l.Name] = true
		c := Check{Name: CheckFileHash + ":" + l.Name, Want: hex.EncodeToString(l.SHA256[:])}
		f, ok := b.Files[l.Name]
		switch {
		case !ok:
			c.Status, c.Got, c.Detail = Fail, "missing", l.Name+" is listed in sha256sum.txt but absent"
			c.Hint = "a file of the bundle was removed"
		case sha256.Sum256(f) != l.SHA256:
			got := sha256.Sum256(f)
			c.Status, c.Got, c.Detail = Fail, hex.EncodeToString(got[:]), l.Name+" does not match its line in sha256sum.txt"
			c.Hint = "the file was changed after the bundle was quoted"
		default:
			c.Status, c.Got, c.Detail = Pass, c.Want, l.Name+" matches sha256sum.txt"
		}
		cs = append(cs, c)
	}
	cs = append(cs, listedCheck(b, listed))
	cs = append(cs, noPrivateKeyCheck(b.Files))
	acct := Check{Name: CheckAccount, Status: Pass, Got: b.AccountURI(), Detail: "account record parses; its uri is the account the CAA record must pin"}
	if b.AccountErr != nil {
		acct = Check{Name: CheckAccount, Status: Fail, Detail: b.AccountErr.Error(), Hint: "acme-account.json must be the public ACME registration {\"body\", \"uri\"}"}
	}
	cs = append(cs, acct)
	cs = append(cs, certChecks(b)...)
	cs = append(cs, historyCheck(b))

	var want *[64]byte
	what := "SHA-256(sha256sum.txt) followed by 32 zero bytes"
	if s, ok := b.Files[SHA256SumFile]; ok {
		var nonce [32]byte
		if opts.Nonce != nil {
			nonce = *opts.Nonce
			what = "SHA-256(sha256sum.txt) followed by the nonce " + hex.EncodeToString(nonce[:])
		}
		rd := BundleReportData(sha256.Sum256(s), nonce)
		want = &rd
	}
	return append(cs, quoteChecks(b.Quote, b.QuoteErr, want, what, opts, tdx)...)
}

// listedCheck: every file is in sha256sum.txt and the required ones exist.
func listedCheck(b *ParsedBundle, listed map[string]bool) Check {
	var unlisted, problems []string
	for name := range b.Files {
		if name != SHA256SumFile && name != QuoteFile && !listed[name] {
			unlisted = append(unlisted, name)
		}
	}
	sort.Strings(unlisted)
	if len(unlisted) > 0 {
		problems = append(problems, "not listed in sha256sum.txt: "+strings.Join(unlisted, ", "))
	}
	var missing []string
	if b.SumsErr == nil {
		if !listed[AccountFile] {
			missing = append(missing, AccountFile)
		}
		if !anyCertListed(listed) {
			missing = append(missing, "a certificate (cert.pem or cert-<domain>.pem)")
		}
	}
	if _, ok := b.Files[QuoteFile]; !ok {
		missing = append(missing, QuoteFile)
	}
	if len(missing) > 0 {
		problems = append(problems, "required but absent: "+strings.Join(missing, ", "))
	}
	c := Check{Name: CheckFilesListed, Want: "every file listed in sha256sum.txt", Got: fmt.Sprintf("%d files", len(b.Files))}
	if len(problems) > 0 {
		c.Status, c.Detail = Fail, strings.Join(problems, "; ")
		c.Hint = "the quote vouches only for listed files: an unlisted file was added, or a required one removed"
		return c
	}
	c.Status, c.Detail = Pass, "every file is listed and the required ones exist ("+b.Layout()+" layout)"
	return c
}

func anyCertListed(listed map[string]bool) bool {
	for name := range listed {
		if _, ok := certFileDomain(name); ok || name == CertFile {
			return true
		}
	}
	return false
}

func noPrivateKeyCheck(files map[string][]byte) Check {
	var bad []string
	for name, f := range files {
		if bytes.Contains(f, []byte("PRIVATE KEY")) {
			bad = append(bad, name)
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return Check{Name: CheckNoPrivateKey, Status: Fail, Got: strings.Join(bad, ", "), Detail: "files contain \"PRIVATE KEY\"",
			Hint: "a private key was published: treat it as compromised"}
	}
	return Check{Name: CheckNoPrivateKey, Status: Pass, Detail: "no file contains \"PRIVATE KEY\""}
}

// certChecks: each certificate file parses as a chain, leaf first, and a
// cert-<domain>.pem leaf covers its domain; cert.pem is one of them.
func certChecks(b *ParsedBundle) []Check {
	var names []string
	for name, f := range b.Files {
		if _, ok := certFileDomain(name); f != nil && (ok || name == CertFile) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var cs []Check
	perDomain := 0
	for _, name := range names {
		c := Check{Name: CheckCert + ":" + name}
		if err := b.ChainErrs[name]; err != nil {
			c.Status, c.Detail = Fail, err.Error()
			c.Hint = "certificate files must hold the full chain in PEM, leaf first"
			cs = append(cs, c)
			continue
		}
		leaf := b.Leaf(name)
		fp := sha256.Sum256(leaf.Raw)
		c.Got = "sha256 " + hex.EncodeToString(fp[:])
		c.Status, c.Detail = Pass, fmt.Sprintf("chain of %d, leaf for %s", len(b.Chains[name]), strings.Join(leaf.DNSNames, ", "))
		if d, ok := certFileDomain(name); ok {
			perDomain++
			if !covers(leaf, d) {
				c.Status, c.Want = Fail, d
				c.Detail = fmt.Sprintf("leaf is for %s, not %s", strings.Join(leaf.DNSNames, ", "), d)
				c.Hint = "the file holds another domain's certificate"
			}
		}
		cs = append(cs, c)
	}
	if leaf := b.Leaf(CertFile); leaf != nil && perDomain > 0 {
		same := false
		for name, ch := range b.Chains {
			if name != CertFile && bytes.Equal(ch[0].Raw, leaf.Raw) {
				same = true
			}
		}
		if !same {
			for i := range cs {
				if cs[i].Name == CheckCert+":"+CertFile && cs[i].Status == Pass {
					cs[i].Status = Warn
					cs[i].Detail += "; but cert.pem is none of the cert-<domain>.pem files"
					cs[i].Hint = "cert.pem should be the primary domain's chain"
				}
			}
		}
	}
	return cs
}

// historyCheck: history.json parses and lists every current leaf.
func historyCheck(b *ParsedBundle) Check {
	c := Check{Name: CheckHistory}
	if errors.Is(b.HistoryErr, fs.ErrNotExist) {
		c.Status, c.Detail = Warn, "no history.json ("+b.Layout()+" layout): what cannot be checked is whether every certificate in the CT logs was this deployment's"
		c.Hint = "dstack-ingress publishes no history; tee-ingress does"
		return c
	}
	if b.HistoryErr != nil {
		c.Status, c.Detail = Fail, b.HistoryErr.Error()
		return c
	}
	known := map[string]bool{}
	for _, e := range b.History {
		known[e.SHA256] = true
	}
	var absent []string
	for name, ch := range b.Chains {
		fp := sha256.Sum256(ch[0].Raw)
		if !known[hex.EncodeToString(fp[:])] {
			absent = append(absent, name)
		}
	}
	sort.Strings(absent)
	c.Got = fmt.Sprintf("%d certificates", len(b.History))
	if len(absent) > 0 {
		c.Status, c.Detail = Fail, "history.json lacks the leaf of "+strings.Join(absent, ", ")
		c.Hint = "history.json must list every certificate this deployment has served"
		return c
	}
	c.Status, c.Detail = Pass, "history lists every current certificate"
	return c
}
