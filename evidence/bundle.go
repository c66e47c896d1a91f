package evidence

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"
)

// BundleInput is what a bundle is built from.
type BundleInput struct {
	// Account is acme-account.json exactly as it will be published: lego's
	// registration.Resource, {"body": {...}, "uri": "https://..."}. Required.
	Account []byte
	// Primary is the primary domain; its chain is also published as
	// cert.pem. Required; must be a key of Certs.
	Primary string
	// Certs maps each configured domain ("example.com", "*.example.com") to
	// its full chain in PEM, leaf first. At least one entry.
	Certs map[string][]byte
	// History lists certificates served before (from the previous bundle);
	// nil means none. The current leaves are merged in.
	History []HistoryEntry
}

// Bundle is one immutable, published evidence bundle. Its methods share
// the underlying bytes: callers must not modify what they return.
type Bundle struct {
	files   map[string][]byte
	digests map[string][32]byte
	names   []string // sha256sum.txt order, then sha256sum.txt and quote.json
	sums    [32]byte // SHA-256 of sha256sum.txt
	history []HistoryEntry
	quote   *Quote
	built   time.Time
}

// Names lists the bundle's files: those of sha256sum.txt in its order,
// then sha256sum.txt and quote.json.
func (b *Bundle) Names() []string { return slices.Clone(b.names) }

// File returns the bytes of the named file.
func (b *Bundle) File(name string) ([]byte, bool) {
	f, ok := b.files[name]
	return f, ok
}

// Files returns all files by name (a new map over the shared bytes).
func (b *Bundle) Files() map[string][]byte { return maps.Clone(b.files) }

// SHA256 returns the SHA-256 of the named file.
func (b *Bundle) SHA256(name string) ([32]byte, bool) {
	d, ok := b.digests[name]
	return d, ok
}

// SumsDigest is SHA-256(sha256sum.txt), the first half of every report_data
// that vouches for this bundle.
func (b *Bundle) SumsDigest() [32]byte { return b.sums }

// History is the history.json content of this bundle.
func (b *Bundle) History() []HistoryEntry { return slices.Clone(b.history) }

// Quote is the quote published as quote.json.
func (b *Bundle) Quote() *Quote { return b.quote }

// Built is when the bundle was built.
func (b *Bundle) Built() time.Time { return b.built }

// BundleReportData is the report_data binding a bundle whose sha256sum.txt
// has SHA-256 sums: sums || nonce, with a zero nonce for the published quote.
func BundleReportData(sums [32]byte, nonce [32]byte) [64]byte {
	var rd [64]byte
	copy(rd[:32], sums[:])
	copy(rd[32:], nonce[:])
	return rd
}

// ErrQuote marks a failure to obtain a valid quote: the guest agent failed or
// returned a quote that does not carry the requested report_data.
var ErrQuote = errors.New("no valid quote")

// BuildBundle validates in, writes the bundle's files and asks q for the quote
// binding them. It fails closed: any invalid input or any doubt about the
// quote returns an error and no bundle.
func BuildBundle(ctx context.Context, q Quoter, in BundleInput) (*Bundle, error) {
	if q == nil {
		return nil, errors.New("building evidence bundle: no Quoter")
	}
	files, err := bundleFiles(in)
	if err != nil {
		return nil, fmt.Errorf("building evidence bundle: %w", err)
	}
	listed := sumOrder(files)
	lines := make([]SumLine, len(listed))
	for i, n := range listed {
		lines[i] = SumLine{Name: n, SHA256: sha256.Sum256(files[n])}
	}
	sums := EncodeSHA256Sum(lines)
	files[SHA256SumFile] = sums
	b := &Bundle{
		files: files,
		names: append(listed, SHA256SumFile, QuoteFile),
		sums:  sha256.Sum256(sums),
	}
	rd := BundleReportData(b.sums, [32]byte{})
	quote, err := checkedQuote(ctx, q, rd)
	if err != nil {
		return nil, fmt.Errorf("building evidence bundle: %w", err)
	}
	files[QuoteFile] = quote.Raw
	b.quote = quote
	b.history, _ = ParseHistory(files[HistoryFile])
	b.digests = make(map[string][32]byte, len(files))
	for n, f := range files {
		if bytes.Contains(f, []byte("PRIVATE KEY")) {
			return nil, fmt.Errorf("building evidence bundle: %s contains \"PRIVATE KEY\"; refusing to publish it", n)
		}
		b.digests[n] = sha256.Sum256(f)
	}
	b.built = time.Now()
	return b, nil
}

// bundleFiles validates in and returns every file but sha256sum.txt and quote.json.
func bundleFiles(in BundleInput) (map[string][]byte, error) {
	if _, err := ParseAccount(in.Account); err != nil {
		return nil, err
	}
	if len(in.Certs) == 0 {
		return nil, errors.New("no certificates; want at least the primary domain's chain")
	}
	if err := ValidateDomain(in.Primary); err != nil {
		return nil, fmt.Errorf("primary domain: %w", err)
	}
	if _, ok := in.Certs[in.Primary]; !ok {
		return nil, fmt.Errorf("primary domain %s has no certificate chain", in.Primary)
	}
	files := map[string][]byte{AccountFile: bytes.Clone(in.Account)}
	var current []HistoryEntry
	for _, d := range slices.Sorted(maps.Keys(in.Certs)) {
		if err := ValidateDomain(d); err != nil {
			return nil, err
		}
		chain, err := ParseChainPEM(in.Certs[d])
		if err != nil {
			return nil, fmt.Errorf("certificate chain of %s: %w", d, err)
		}
		if !covers(chain[0], d) {
			return nil, fmt.Errorf("certificate chain of %s: leaf is for %v, not %s", d, chain[0].DNSNames, d)
		}
		pemChain := encodeChainPEM(chain)
		files[CertFileName(d)] = pemChain
		if d == in.Primary {
			files[CertFile] = pemChain
		}
		current = append(current, NewHistoryEntry(chain[0]))
	}
	files[HistoryFile] = EncodeHistory(MergeHistory(in.History, current))
	return files, nil
}

// sumOrder is the order of sha256sum.txt: acme-account.json, cert.pem,
// cert-*.pem sorted bytewise, history.json.
func sumOrder(files map[string][]byte) []string {
	var certs []string
	for n := range files {
		if _, ok := certFileDomain(n); ok {
			certs = append(certs, n)
		}
	}
	sort.Strings(certs)
	return append(append([]string{AccountFile, CertFile}, certs...), HistoryFile)
}

// checkedQuote gets a quote for rd and checks what will be published: Raw
// parses as quote.json, and both the quote body and the report_data field
// carry rd. A quoter answering with an error body or a stale quote fails here.
func checkedQuote(ctx context.Context, q Quoter, rd [64]byte) (*Quote, error) {
	got, err := q.Quote(ctx, rd)
	if err != nil {
		return nil, fmt.Errorf("%w: getting quote: %w", ErrQuote, err)
	}
	if got == nil {
		return nil, fmt.Errorf("%w: quoter returned nothing", ErrQuote)
	}
	if bytes.Contains(got.Raw, []byte("PRIVATE KEY")) {
		return nil, fmt.Errorf("%w: quote response contains \"PRIVATE KEY\"", ErrQuote)
	}
	pub, err := ParseQuoteJSON(got.Raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrQuote, err)
	}
	tq, err := ParseTDQuote(pub.Quote)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrQuote, err)
	}
	if tq.ReportData != rd {
		return nil, fmt.Errorf("%w: quote carries report_data %x, requested %x", ErrQuote, tq.ReportData, rd)
	}
	if pub.ReportData != nil && !bytes.Equal(pub.ReportData, rd[:]) {
		return nil, fmt.Errorf("%w: report_data field %x differs from the requested %x", ErrQuote, pub.ReportData, rd)
	}
	events, err := ParseEventLog(pub.EventLog)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrQuote, err)
	}
	rtmrs, err := ReplayRTMRs(events)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrQuote, err)
	}
	if rtmrs != tq.RTMRs {
		return nil, fmt.Errorf("%w: the event log does not replay to the quote's RTMRs", ErrQuote)
	}
	return pub, nil
}
