package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/internal/acmeca"
	"github.com/tee-ingress/tee-ingress/internal/agentsim"
	"github.com/tee-ingress/tee-ingress/internal/etcdtest"
)

// replicaSims are n guest-agent simulators for n instances of one app: one
// seed (so one app id, one KMS and one TDX root), n instance ids.
func replicaSims(t testing.TB, w *world, n int) []string {
	t.Helper()
	seed := bytes.Repeat([]byte{7}, 32)
	var socks []string
	for i := range n {
		sim, err := agentsim.New(agentsim.Config{Stripped: true, Seed: seed, InstanceID: bytes.Repeat([]byte{byte(i + 1)}, 20)})
		if err != nil {
			t.Fatal(err)
		}
		sock := filepath.Join(w.dir, fmt.Sprintf("r%d.sock", i))
		if err := sim.Serve(sock); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sim.Close() })
		if i == 0 {
			w.sim = sim // the root and app id every replica's evidence names
			os.WriteFile(w.tdxRoot, sim.RootPEM(), 0o644)
		}
		socks = append(socks, sock)
	}
	return socks
}

func servedSerial(t testing.TB, addr, domain string) string {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr,
		&tls.Config{ServerName: domain, InsecureSkipVerify: true})
	if err != nil {
		return ""
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
}

// TestReplicasBinary: three ingress processes of one app, one etcd: one
// order at the CA; all three serve the same leaf and publish evidence
// that verifies, each with its own quote and instance id and the same
// history; the metrics name one leader and count the store.
func TestReplicasBinary(t *testing.T) {
	bin, _ := binaries(t)
	w := newWorld(t, acmeca.Options{})
	etcd, err := etcdtest.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Stop)
	socks := replicaSims(t, w, 3)
	domain := "app." + testZone
	be := newBackend(t, "app")
	var ps []*proc
	for _, sock := range socks {
		env := w.env(t.TempDir(), map[string]string{"DSTACK_SIMULATOR_ENDPOINT": sock, "TARGET_ENDPOINT": be.addr,
			"CLUSTER_STORE": "etcd://" + strings.TrimPrefix(etcd.Endpoint(), "http://"), "METRICS_LISTEN": "127.0.0.1:0",
			"SET_CAA": "true"})
		ps = append(ps, startIngress(t, bin, env, "--listen", "127.0.0.1:0"))
	}
	var addrs []string
	for _, p := range ps {
		addrs = append(addrs, p.addr())
	}
	for _, p := range ps {
		p.waitReady()
	}
	var serials []string
	for _, a := range addrs {
		serials = append(serials, servedSerial(t, a, domain))
	}
	if serials[0] == "" || slices.ContainsFunc(serials, func(s string) bool { return s != serials[0] }) {
		t.Fatalf("replicas serve %v", serials)
	}
	if n := w.ca.Orders(); n != 1 {
		t.Fatalf("%d orders at the CA, want 1", n)
	}
	for _, a := range addrs {
		pb := verifyEvidence(t, w, a, domain)
		var found bool
		for _, h := range pb.History {
			found = found || strings.EqualFold(strings.TrimLeft(h.Serial, "0"), strings.TrimLeft(serials[0], "0"))
		}
		if !found {
			t.Errorf("%s: history.json lacks the served certificate %s: %+v", a, serials[0], pb.History)
		}
	}
	leaders, orders := 0, 0
	for _, p := range ps {
		m := scrape(t, p.metricsAddr())
		if !strings.Contains(m, `tee_ingress_cluster_leader{domain="`+domain+`"}`) {
			t.Errorf("no leader gauge:\n%s", m)
		}
		orders += metricInt(m, `tee_ingress_certificate_orders_total{domain="`+domain+`"}`)
		leaders += metricInt(m, `tee_ingress_certificate_renewals_total{domain="`+domain+`"}`)
		if metricInt(m, "tee_ingress_cluster_store_calls_total") == 0 {
			t.Errorf("no store calls counted")
		}
	}
	if orders != 1 || leaders != 1 {
		t.Errorf("metrics: %d orders, %d issuances over three replicas; want 1 and 1", orders, leaders)
	}
	for _, p := range ps {
		if code := p.stop(); code != 0 {
			t.Fatalf("exit %d\n%s", code, p.logs())
		}
	}
}

func metricInt(m, name string) int {
	re := regexp.MustCompile("(?m)^" + regexp.QuoteMeta(name) + ` (\d+)`)
	if s := re.FindStringSubmatch(m); s != nil {
		var n int
		fmt.Sscan(s[1], &n)
		return n
	}
	return 0
}
