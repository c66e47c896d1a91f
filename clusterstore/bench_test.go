package clusterstore

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"testing"
	"time"
)

// BenchmarkInstallAcrossReplicas: the time from the issuer's fenced write
// of a new certificate to the last of N replicas holding it, and the bytes
// the store keeps per domain set (certificate with key, sealed, plus the
// history entry).
func BenchmarkInstallAcrossReplicas(b *testing.B) {
	for _, n := range []int{3, 10} {
		b.Run(fmt.Sprintf("replicas=%d", n), func(b *testing.B) {
			const domain = "app.example.test"
			c := newCluster(b, domain)
			rs := make([]*replica, n)
			for i := range rs {
				rs[i] = c.start(fmt.Sprintf("r%d", i), "")
			}
			waitServing(b, domain, rs...)
			issuer := open(b, c.etcd, "issuer", key(9), b.TempDir())
			dir := c.ca.DirectoryURL()
			notBefore := time.Now()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				notBefore = notBefore.Add(time.Second)
				data, serial := selfSignedStored(b, domain, dir, notBefore, int64(i+1000))
				lock, err := issuer.Lock(b.Context(), domain+".json")
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := lock.Put(b.Context(), "certs/"+domain+".json", data); err != nil {
					b.Fatal(err)
				}
				for _, r := range rs {
					for r.mgr.Current(c.sets[0]).Leaf.SerialNumber.Cmp(serial) != 0 {
						time.Sleep(100 * time.Microsecond)
					}
				}
				b.StopTimer()
				lock.Unlock(b.Context())
				b.StartTimer()
			}
			b.StopTimer()
			resp, err := raw(b, c.etcd).Get(b.Context(), "/tee-ingress/app/certs/"+domain+".json")
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(len(resp.Kvs[0].Value)), "cert-bytes/set")
		})
	}
}

// selfSignedStored is acme's stored form of a certificate for domain; the
// replicas accept it as they would a CA's (they check names and key, and
// the CA is checked when it is ordered).
func selfSignedStored(b testing.TB, domain, directory string, notBefore time.Time, serial int64) ([]byte, *big.Int) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: domain},
		DNSNames: []string{domain}, NotBefore: notBefore, NotAfter: notBefore.Add(90 * 24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	data, _ := json.Marshal(map[string]any{"domains": []string{domain}, "directory": directory,
		"chain_pem": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		"key_pem":   string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))})
	return data, tmpl.SerialNumber
}
