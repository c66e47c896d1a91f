package clusterstore

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/acme"
	"github.com/tee-ingress/tee-ingress/internal/etcdtest"
)

// TestMutualTLS: against an etcd that requires client certificates, the
// store works with one and fails, with an error naming etcd, without.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	caKey, caCert := newCA(t)
	files := map[string][]byte{"ca.pem": pemCert(caCert.Raw)}
	serverDER, serverKey := issue(t, caKey, caCert, "etcd", []net.IP{net.ParseIP("127.0.0.1")}, x509.ExtKeyUsageServerAuth)
	clientDER, clientKey := issue(t, caKey, caCert, "ingress", nil, x509.ExtKeyUsageClientAuth)
	files["server.pem"], files["server-key.pem"] = pemCert(serverDER), pemKey(t, serverKey)
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := etcdtest.StartTLS(t.TempDir(), &etcdtest.TLS{CertFile: filepath.Join(dir, "server.pem"),
		KeyFile: filepath.Join(dir, "server-key.pem"), CAFile: filepath.Join(dir, "ca.pem")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	pair, err := tls.X509KeyPair(pemCert(clientDER), pemKey(t, clientKey))
	if err != nil {
		t.Fatal(err)
	}
	open := func(cfg *tls.Config) *Store {
		s, err := Open(Options{Endpoints: []string{srv.Endpoint()}, TLS: cfg, Prefix: "/p/", SealKey: key(1),
			StateDir: t.TempDir(), Self: "a", OpTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	good := open(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}})
	if err := good.CompareAndSwap(t.Context(), "k", []byte("v"), acme.AnyVersion); err != nil {
		t.Fatalf("with a client certificate: %v", err)
	}
	bad := open(&tls.Config{RootCAs: pool})
	if _, _, err := bad.Get(t.Context(), "k"); err == nil {
		t.Fatal("without a client certificate, etcd answered")
	} else {
		t.Logf("without a client certificate: %v", err)
	}
}

func newCA(t *testing.T) (*ecdsa.PrivateKey, *x509.Certificate) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test etcd CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return key, c
}

func issue(t *testing.T, caKey *ecdsa.PrivateKey, ca *x509.Certificate, cn string, ips []net.IP, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: ips,
		ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func pemKey(t *testing.T, k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}
