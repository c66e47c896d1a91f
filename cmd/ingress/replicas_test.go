package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tee-ingress/tee-ingress/internal/acmeca"
	"github.com/tee-ingress/tee-ingress/internal/agentsim"
	"github.com/tee-ingress/tee-ingress/internal/ctlog"
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

// startReplicas starts n ingress processes of one app on etcd.
func startReplicas(t testing.TB, bin string, w *world, etcd *etcdtest.Server, n int) (ps []*proc, addrs []string) {
	t.Helper()
	socks := replicaSims(t, w, n)
	be := newBackend(t, "app")
	for _, sock := range socks {
		env := w.env(t.TempDir(), map[string]string{"DSTACK_SIMULATOR_ENDPOINT": sock, "TARGET_ENDPOINT": be.addr,
			"CLUSTER_STORE": "etcd://" + strings.TrimPrefix(etcd.Endpoint(), "http://"), "METRICS_LISTEN": "127.0.0.1:0",
			"SET_CAA": "true", "GATEWAY_DOMAIN": "_.gw." + testZone})
		ps = append(ps, startIngress(t, bin, env, "--listen", "127.0.0.1:0"))
	}
	for _, p := range ps {
		addrs = append(addrs, p.addr())
	}
	return ps, addrs
}

var electedRe = regexp.MustCompile(`msg="elected to order`)

// leaderAmong waits until exactly one of ps (skipping skip) has logged its
// election more often than before, and returns its index.
func leaderAmong(t testing.TB, ps []*proc, skip int) int {
	t.Helper()
	leader := -1
	waitFor(t, "an elected issuer", 60*time.Second, func() bool {
		for i, p := range ps {
			if i != skip && electedRe.MatchString(p.stderr.String()) {
				leader = i
				return true
			}
		}
		return false
	}, func() string { return "" })
	return leader
}

// sameServed waits until every address serves one leaf and returns its serial.
func sameServed(t testing.TB, domain string, addrs ...string) string {
	t.Helper()
	var serials []string
	waitFor(t, "one leaf on every replica", 60*time.Second, func() bool {
		serials = serials[:0]
		for _, a := range addrs {
			serials = append(serials, servedSerial(t, a, domain))
		}
		return serials[0] != "" && !slices.ContainsFunc(serials, func(s string) bool { return s != serials[0] })
	}, func() string { return fmt.Sprint(serials) })
	return serials[0]
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
	domain := "app." + testZone
	ps, addrs := startReplicas(t, bin, w, etcd, 3)
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
	// The records were written once, not once per replica.
	for _, name := range []string{domain + ".", "_dstack-app-address." + domain + "."} {
		for _, typ := range []uint16{dns.TypeCNAME, dns.TypeTXT, dns.TypeCAA} {
			if rrs := w.dns.Records(name, typ); len(rrs) > 1 {
				t.Errorf("%d %s records at %s: %v", len(rrs), dns.TypeToString[typ], name, rrs)
			}
		}
	}
	writes := 0
	for _, r := range w.cf.Requests() {
		if !strings.HasPrefix(r, "GET") {
			writes++
		}
	}
	// Each test replica listens on its own port, so each rewrites the
	// routing TXT (app id:port); deployed replicas share one port.
	t.Logf("Cloudflare API writes over three replicas: %d of %d requests", writes, len(w.cf.Requests()))
	for _, a := range addrs {
		verifyDomain(t, w, a, domain)
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

// replicasMidOrder starts three replicas with the CA holding new orders and
// returns once the elected issuer's order is held there.
func replicasMidOrder(t *testing.T) (w *world, release func(), ps []*proc, addrs []string) {
	bin, _ := binaries(t)
	w = newWorld(t, acmeca.Options{})
	release = w.ca.HoldNewOrders()
	t.Cleanup(release)
	etcd, err := etcdtest.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Stop)
	ps, addrs = startReplicas(t, bin, w, etcd, 3)
	waitFor(t, "the issuer's order at the CA", 60*time.Second, func() bool { return w.ca.Waiting() == 1 }, func() string { return "" })
	return w, release, ps, addrs
}

// verifyDomain runs `verifycli domain` against one replica, with a CT
// stand-in that logs every certificate the CA issued: its CT check passes
// only when the replica's history.json lists all of them.
func verifyDomain(t *testing.T, w *world, addr, domain string) {
	t.Helper()
	_, vc := binaries(t)
	ct := ctlog.Start()
	defer ct.Close()
	for _, leaf := range w.ca.Issued() {
		ct.Add(leaf)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, vc, "domain", "https://"+domain, "--connect", addr, "--ca-file", w.roots,
		"--tdx-root", w.tdxRoot, "--resolver", w.dns.Addr(), "--ct-url", ct.URL()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "result: PASS") {
		t.Fatalf("verifycli domain against %s (%d certificates in CT): %v\n%s", addr, len(w.ca.Issued()), err, out)
	}
}

// TestReplicasIssuerKilled: the elected issuer is SIGKILLed while its
// order is at the CA; another replica takes over once the lease lapses
// and issues; nothing is half-installed: both survivors serve one leaf and
// publish evidence that verifies.
func TestReplicasIssuerKilled(t *testing.T) {
	w, release, ps, addrs := replicasMidOrder(t)
	domain := "app." + testZone
	dead := leaderAmong(t, ps, -1)
	ps[dead].cmd.Process.Kill()
	<-ps[dead].done
	killed := time.Now()
	// The successor's order arrives after the lease (15 s) lapsed.
	waitFor(t, "the successor's order", 60*time.Second, func() bool { return w.ca.Waiting() == 1 && time.Since(killed) > time.Second },
		func() string { return "" })
	release()
	var live []string
	for i, a := range addrs {
		if i != dead {
			live = append(live, a)
		}
	}
	serial := sameServed(t, domain, live...)
	t.Logf("successor issued %s %s after the kill", serial, time.Since(killed).Round(time.Second))
	if n := w.ca.Orders(); n < 1 || n > 2 {
		t.Fatalf("%d orders at the CA, want 1 (at most one extra)", n)
	}
	for i, p := range ps {
		if i == dead {
			continue
		}
		p.waitReady()
		verifyEvidence(t, w, addrs[i], domain)
	}
}

// TestReplicasIssuerPaused: the elected issuer is SIGSTOPped during its
// order past its lease; a successor issues; the old one resumes, finishes
// its order, has its write refused by the fence, installs the successor's
// certificate, and its own certificate still enters the shared history.
func TestReplicasIssuerPaused(t *testing.T) {
	w, release, ps, addrs := replicasMidOrder(t)
	domain := "app." + testZone
	old := leaderAmong(t, ps, -1)
	ps[old].cmd.Process.Signal(syscall.SIGSTOP)
	t.Cleanup(func() { ps[old].cmd.Process.Signal(syscall.SIGCONT) })
	leaderAmong(t, ps, old) // the successor is elected once the lease lapsed
	waitFor(t, "both orders at the CA", 30*time.Second, func() bool { return w.ca.Waiting() == 2 }, func() string { return "" })
	release()
	var others []string
	for i, a := range addrs {
		if i != old {
			others = append(others, a)
		}
	}
	serial := sameServed(t, domain, others...)
	ps[old].cmd.Process.Signal(syscall.SIGCONT)
	fenced := ps[old].waitLog(regexp.MustCompile(`msg="the issuer lock lapsed during the order.*serial=(\w+)`), 60*time.Second)
	if got := sameServed(t, domain, addrs...); got != serial {
		t.Fatalf("after resuming, the replicas serve %s; want the successor's %s", got, serial)
	}
	if n := w.ca.Orders(); n != 2 {
		t.Fatalf("%d orders at the CA, want 2", n)
	}
	// The fenced-out certificate is public in CT: every history lists it,
	// and verifycli's CT check passes against every replica.
	for _, a := range addrs {
		waitFor(t, "the fenced-out certificate in the history", 60*time.Second, func() bool {
			pb := verifyEvidence(t, w, a, domain)
			for _, h := range pb.History {
				if strings.TrimLeft(h.Serial, "0") == strings.TrimLeft(fenced[1], "0") {
					return true
				}
			}
			return false
		}, func() string { return "" })
		verifyDomain(t, w, a, domain)
	}
}
