package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/tee-ingress/tee-ingress/verifycli/report"
)

// TestMain makes the test binary double as verifycli: testscript scripts
// and the Go tests below run the real command as a separate process.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){"verifycli": main})
}

// cliRun is one run of the verifycli binary.
type cliRun struct {
	stdout, stderr string
	code           int
	report         *report.Report // with --json and exit 0 or 1
}

// runCLI runs the verifycli binary (this test binary under that name, on
// PATH through TestMain) with args and a deadline.
func runCLI(t *testing.T, args ...string) cliRun {
	t.Helper()
	path, err := exec.LookPath("verifycli")
	if err != nil {
		t.Fatalf("verifycli not on PATH: %v", err)
	}
	cmd := exec.Command(path, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	// GORACE: a -race binary otherwise sleeps a second at every exit 0.
	cmd.Env = append(os.Environ(), "NO_COLOR=1", "GORACE=atexit_sleep_ms=0")
	cmd.WaitDelay = time.Second
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("verifycli %s: still running after 60s", strings.Join(args, " "))
	}
	r := cliRun{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("running verifycli: %v", err)
	}
	if slices.Contains(args, "--json") && (r.code == 0 || r.code == 1) {
		r.report = &report.Report{}
		if err := json.Unmarshal(out.Bytes(), r.report); err != nil {
			t.Fatalf("verifycli %s: stdout is not a JSON report: %v\n%s\nstderr: %s", strings.Join(args, " "), err, r.stdout, r.stderr)
		}
	}
	return r
}

// failed lists the names of the report's failed checks, sorted.
func (r cliRun) failed() []string {
	var out []string
	for _, c := range r.report.Checks {
		if c.Status == report.StatusFail {
			out = append(out, c.Name)
		}
	}
	slices.Sort(out)
	return out
}

// check returns the named check.
func (r cliRun) check(t *testing.T, name string) report.Check {
	t.Helper()
	for _, c := range r.report.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %q in the report:\n%s", name, r.dump())
	return report.Check{}
}

// dump renders the report's checks for failure messages.
func (r cliRun) dump() string {
	var b strings.Builder
	if r.report == nil {
		return "stdout:\n" + r.stdout + "\nstderr:\n" + r.stderr
	}
	for _, c := range r.report.Checks {
		b.WriteString("  " + c.Status + " " + c.Name + ": " + c.Detail)
		if c.Status != report.StatusPass && (c.Want != "" || c.Got != "") {
			b.WriteString(" [want " + c.Want + " got " + c.Got + "]")
		}
		b.WriteString("\n")
	}
	b.WriteString("stderr: " + r.stderr)
	return b.String()
}

// testCA issues WebPKI-like chains: root -> intermediate -> leaf.
type testCA struct {
	root, inter       *x509.Certificate
	rootKey, interKey *ecdsa.PrivateKey
	mu                sync.Mutex
	serial            int64
}

func newTestCA(t testing.TB, name string, notBefore, notAfter time.Time) *testCA {
	t.Helper()
	// Serials start at a random point, so two CAs do not share them by accident.
	base, _ := rand.Int(rand.Reader, big.NewInt(1<<40))
	ca := &testCA{serial: base.Int64() << 8}
	ca.rootKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca.interKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rootT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " root", Organization: []string{"verifycli tests"}},
		NotBefore: notBefore, NotAfter: notAfter, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, rootT, rootT, &ca.rootKey.PublicKey, ca.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	ca.root, _ = x509.ParseCertificate(der)
	interT := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name + " intermediate", Organization: []string{"verifycli tests"}},
		NotBefore: notBefore, NotAfter: notAfter, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err = x509.CreateCertificate(rand.Reader, interT, ca.root, &ca.interKey.PublicKey, ca.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	ca.inter, _ = x509.ParseCertificate(der)
	return ca
}

// issued is one certificate from a testCA.
type issued struct {
	leaf     *x509.Certificate
	key      *ecdsa.PrivateKey
	chainPEM []byte // leaf, intermediate
}

func (i issued) tlsCert() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{i.leaf.Raw, certRaw(i.chainPEM, 1)}, PrivateKey: i.key, Leaf: i.leaf}
}

// certRaw returns the DER of the n-th certificate of a PEM chain.
func certRaw(chain []byte, n int) []byte {
	for i := 0; ; i++ {
		var blk *pem.Block
		blk, chain = pem.Decode(chain)
		if blk == nil {
			return nil
		}
		if i == n {
			return blk.Bytes
		}
	}
}

// issue makes a leaf for names valid from notBefore to notAfter; key nil
// means a new one. The serial has its high bit set, so that its DER
// encoding, and crt.sh's hex, start with a zero byte.
func (ca *testCA) issue(t testing.TB, key *ecdsa.PrivateKey, notBefore, notAfter time.Time, names ...string) issued {
	t.Helper()
	ca.mu.Lock()
	ca.serial++
	serial := new(big.Int).Lsh(big.NewInt(ca.serial), 40)
	serial.SetBit(serial, 127, 1)
	ca.mu.Unlock()
	return ca.issueWith(t, key, serial, notBefore, notAfter, names...)
}

func (ca *testCA) issueWith(t testing.TB, key *ecdsa.PrivateKey, serial *big.Int, notBefore, notAfter time.Time, names ...string) issued {
	t.Helper()
	if key == nil {
		key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.inter, &key.PublicKey, ca.interKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	var b bytes.Buffer
	pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: ca.inter.Raw})
	return issued{leaf: leaf, key: key, chainPEM: b.Bytes()}
}

func (ca *testCA) rootPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.root.Raw})
}

// selfSigned makes a self-signed leaf, as the attested self-signed mode does.
func selfSigned(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: "tee-ingress self-signed"}, DNSNames: names,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// writeFile writes b under dir and returns the path.
func writeFile(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// shortTempDir returns a directory with a short path, for unix sockets
// (about 100 bytes at most; t.TempDir can be longer).
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vcli")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func hexOf(b []byte) string { return hex.EncodeToString(b) }

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
