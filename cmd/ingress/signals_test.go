package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/internal/acmeca"
)

// servedCert returns the leaf the binary at addr serves for name.
func servedCert(t *testing.T, addr, name string) *x509.Certificate {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: name, InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("dialling %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// TestSIGHUPReloadsStatic: SIGHUP never ends the process. In static mode it
// reads --cert and --key again and serves the new pair; a pair that cannot
// be loaded is logged and the current one stays.
func TestSIGHUPReloadsStatic(t *testing.T) {
	bin, _ := binaries(t)
	cert, key, _ := selfSignedFiles(t, "app.test")
	p := startIngress(t, bin, nil, "--cert-source", "static", "--cert", cert, "--key", key, "--listen", "127.0.0.1:0",
		"--target", "127.0.0.1:9", "--drain-timeout", "5s")
	addr := p.addr()
	first := servedCert(t, addr, "app.test")

	// A new pair over the old files, then HUP.
	cert2, key2, _ := selfSignedFiles(t, "app.test", "www.app.test")
	for _, f := range [][2]string{{cert2, cert}, {key2, key}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(regexpMust(`msg="SIGHUP: reloaded the certificate"`), 10*time.Second)
	second := servedCert(t, addr, "app.test")
	if bytes.Equal(first.Raw, second.Raw) || len(second.DNSNames) != 2 {
		t.Fatalf("after SIGHUP the served certificate has names %v; want the new one with 2 names", second.DNSNames)
	}

	// A broken file: an error, and the new certificate is still served.
	if err := os.WriteFile(cert, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(regexpMust(`msg="SIGHUP: reload failed; the current certificate is still served".*--cert `), 10*time.Second)
	if p.exited() {
		t.Fatalf("SIGHUP ended the process:\n%s", p.logs())
	}
	if got := servedCert(t, addr, "app.test"); !bytes.Equal(got.Raw, second.Raw) {
		t.Fatal("a failed reload changed the served certificate")
	}
	if code := p.stop(); code != 0 || !strings.Contains(p.logs(), "msg=stopped") {
		t.Fatalf("exit %d after SIGTERM:\n%s", code, p.logs())
	}
}

// TestSecondInstanceRefused: two instances on one state and evidence
// directory: the second exits 1 naming the first's pid and the directory,
// before it touches either; the first's bundle on disk stays whole.
func TestSecondInstanceRefused(t *testing.T) {
	bin, _ := binaries(t)
	w := newWorld(t, acmeca.Options{})
	state := t.TempDir()
	env := w.env(state, map[string]string{"ACME_ACCOUNT_KEY": "file"})
	first := startIngress(t, bin, env, "--listen", "127.0.0.1:0")
	first.waitReady()
	evDir := filepath.Join(state, "evidences")
	before, err := evidence.ReadBundleDir(evDir)
	if err != nil {
		t.Fatal(err)
	}

	second := startIngress(t, bin, env, "--listen", "127.0.0.1:0")
	if code := second.wait(20 * time.Second); code != 1 {
		t.Fatalf("second instance: exit %d, want 1:\n%s", code, second.logs())
	}
	pid := strconv.Itoa(first.cmd.Process.Pid)
	want := filepath.Join(state, "letsencrypt", "tee-ingress") + " is in use by process " + pid
	if !strings.Contains(second.logs(), want) || !strings.Contains(second.logs(), "STATE_DIR") {
		t.Fatalf("second instance's log does not say %q:\n%s", want, second.logs())
	}
	if strings.Contains(second.logs(), "msg=listening") {
		t.Fatal("the second instance listened before checking its directories")
	}

	// The evidence directory too, on its own (a new state dir).
	env2 := w.env(t.TempDir(), map[string]string{"ACME_ACCOUNT_KEY": "file", "EVIDENCE_DIR": evDir})
	third := startIngress(t, bin, env2, "--listen", "127.0.0.1:0")
	if code := third.wait(20 * time.Second); code != 1 || !strings.Contains(third.logs(), evDir+" is in use by process "+pid) {
		t.Fatalf("instance on the same EVIDENCE_DIR: exit %d:\n%s", code, third.logs())
	}

	after, err := evidence.ReadBundleDir(evDir)
	if err != nil {
		t.Fatalf("the first instance's bundle after the others tried: %v", err)
	}
	pb, err := evidence.ParseBundle(after)
	if err != nil {
		t.Fatal(err)
	}
	checkBundle(t, w, pb)
	if !bytes.Equal(before[evidence.SHA256SumFile], after[evidence.SHA256SumFile]) {
		t.Fatal("the bundle on disk changed")
	}
	if code := first.stop(); code != 0 {
		t.Fatalf("first instance: exit %d", code)
	}
	// Its lock went with it: a new instance starts.
	fourth := startIngress(t, bin, env, "--listen", "127.0.0.1:0")
	fourth.waitReady()
}

// TestDirectoryIsAFile: a STATE_DIR or EVIDENCE_DIR that is a regular file
// is a configuration error (exit 2) naming the variable, not a retry loop.
func TestDirectoryIsAFile(t *testing.T) {
	bin, _ := binaries(t)
	w := newWorld(t, acmeca.Options{})
	for _, v := range []string{"STATE_DIR", "EVIDENCE_DIR"} {
		state := t.TempDir()
		file := filepath.Join(state, "file")
		if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		p := startIngress(t, bin, w.env(state, map[string]string{v: file}), "--listen", "127.0.0.1:0")
		if code := p.wait(20 * time.Second); code != 2 || !strings.Contains(p.logs(), "check "+v) {
			t.Fatalf("%s a file: exit %d:\n%s", v, code, p.logs())
		}
	}
}
