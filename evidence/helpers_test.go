package evidence

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/internal/agentsim"
)

// Test fixtures: real Intel-signed GetQuote responses (see testdata/README.md).
const (
	fixtureFull     = "testdata/dstack-quote-full-eventlog.json"
	fixtureStripped = "testdata/dstack-quote-stripped-eventlog.json"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkByName returns the check named name; the test fails if there is none.
func checkByName(t testing.TB, cs []Check, name string) Check {
	t.Helper()
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %q in %s", name, dumpChecks(cs))
	return Check{}
}

func dumpChecks(cs []Check) string {
	var b strings.Builder
	for i, c := range cs {
		b.WriteString("\n")
		b.WriteString(strings.Repeat(" ", 2))
		b.WriteString(c.Name + " " + string(c.Status) + " " + c.Detail)
		if c.Status == Fail {
			b.WriteString(" want=" + c.Want + " got=" + c.Got)
		}
		_ = i
	}
	return b.String()
}

// wantStatus asserts the named check has status st.
func wantStatus(t testing.TB, cs []Check, name string, st Status) {
	t.Helper()
	if c := checkByName(t, cs, name); c.Status != st {
		t.Errorf("check %s: status %s, want %s (detail %q, want %q, got %q)", name, c.Status, st, c.Detail, c.Want, c.Got)
	}
}

// failedNames lists the names of failed checks.
func failedNames(cs []Check) []string {
	var out []string
	for _, c := range cs {
		if c.Status == Fail {
			out = append(out, c.Name)
		}
	}
	return out
}

// unsignedQuoter answers with the stripped fixture's quote whose report_data
// is overwritten: the layout, event log and RTMR replay are real, the
// signature no longer verifies. Fast; for binding-only tests.
type unsignedQuoter struct {
	base  []byte // raw quote
	log   string
	vm    string
	calls atomic.Int64

	mu       sync.Mutex
	err      error                   // returned when set
	mutate   func(rd *[64]byte)      // changes the quoted report_data
	rawHook  func(raw []byte) []byte // changes the JSON answer
	lastData [64]byte
}

var _ Quoter = (*unsignedQuoter)(nil)

func newUnsignedQuoter(t testing.TB) *unsignedQuoter {
	q, err := ParseQuoteJSON(readFixture(t, fixtureStripped))
	if err != nil {
		t.Fatal(err)
	}
	return &unsignedQuoter{base: q.Quote, log: q.EventLog, vm: q.VMConfig}
}

// reportDataOffset is where report_data sits in a TDX v4 quote.
const reportDataOffset = 568

func (u *unsignedQuoter) Quote(ctx context.Context, rd [64]byte) (*Quote, error) {
	u.calls.Add(1)
	u.mu.Lock()
	err, mutate, hook := u.err, u.mutate, u.rawHook
	u.lastData = rd
	u.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if mutate != nil {
		mutate(&rd)
	}
	raw := bytes.Clone(u.base)
	copy(raw[reportDataOffset:], rd[:])
	body, _ := json.Marshal(map[string]string{
		"quote":       hex.EncodeToString(raw),
		"event_log":   u.log,
		"report_data": hex.EncodeToString(rd[:]),
		"vm_config":   u.vm,
	})
	if hook != nil {
		body = hook(body)
	}
	return &Quote{Raw: body, Quote: raw, EventLog: u.log, ReportData: rd[:], VMConfig: u.vm}, nil
}

func (u *unsignedQuoter) set(f func(u *unsignedQuoter)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	f(u)
}

// simQuoter asks the guest-agent simulator for quotes directly (no socket):
// real signatures under the simulator's root.
type simQuoter struct{ s *agentsim.Simulator }

var _ Quoter = simQuoter{}

func (q simQuoter) Quote(ctx context.Context, rd [64]byte) (*Quote, error) {
	raw, err := q.s.QuoteFor(rd)
	if err != nil {
		return nil, err
	}
	return ParseQuoteJSON(raw)
}

func newSim(t testing.TB, stripped bool) *agentsim.Simulator {
	t.Helper()
	s, err := agentsim.New(agentsim.Config{Stripped: stripped, Seed: []byte("tee-ingress evidence tests seed")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// testPKI issues WebPKI-like chains for tests: root -> intermediate -> leaf.
type testPKI struct {
	root, inter       *x509.Certificate
	rootKey, interKey *ecdsa.PrivateKey
	serial            int64
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	p := &testPKI{}
	var err error
	p.rootKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p.interKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now().Add(-time.Hour).Truncate(time.Second)
	rootT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"}, NotBefore: now, NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, rootT, rootT, &p.rootKey.PublicKey, p.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	p.root, _ = x509.ParseCertificate(der)
	interT := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "test intermediate"}, NotBefore: now, NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err = x509.CreateCertificate(rand.Reader, interT, p.root, &p.interKey.PublicKey, p.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	p.inter, _ = x509.ParseCertificate(der)
	p.serial = 1000
	return p
}

// chain returns a PEM full chain (leaf, intermediate) for names, and the leaf.
func (p *testPKI) chain(t testing.TB, names ...string) ([]byte, *x509.Certificate) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p.serial++
	now := time.Now().Add(-time.Hour).Truncate(time.Second).Add(time.Duration(p.serial) * time.Second)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.serial), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: now, NotAfter: now.Add(90 * 24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.inter, &key.PublicKey, p.interKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	var b bytes.Buffer
	pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: p.inter.Raw})
	return b.Bytes(), leaf
}

const testAccount = `{"body":{"status":"valid","contact":["mailto:ops@example.com"],"orders":"https://acme.example/orders/1"},"uri":"https://acme.example/acme/acct/12345"}`

// testInput is a valid input: primary example.com, plus *.example.com and api.example.org.
func testInput(t testing.TB, p *testPKI) BundleInput {
	t.Helper()
	c1, _ := p.chain(t, "example.com", "www.example.com")
	c2, _ := p.chain(t, "*.example.com")
	c3, _ := p.chain(t, "api.example.org")
	return BundleInput{
		Account: []byte(testAccount),
		Primary: "example.com",
		Certs:   map[string][]byte{"example.com": c1, "*.example.com": c2, "api.example.org": c3},
	}
}

var errTestQuoter = errors.New("guest agent unreachable")

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// pemDecode returns the DER of the first PEM block of b.
func pemDecode(b []byte) ([]byte, []byte) {
	blk, rest := pem.Decode(b)
	if blk == nil {
		return nil, b
	}
	return blk.Bytes, rest
}
