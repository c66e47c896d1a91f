package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
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
