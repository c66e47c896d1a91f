package main

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDev runs `ingress --dev`, waits for it to say it is ready, and runs
// the verify command it printed, which must pass; the curl line must reach
// the demo backend.
func TestDev(t *testing.T) {
	bin, verifycli := binaries(t)
	state := filepath.Join(t.TempDir(), "dev")
	// A developer's real credentials in the environment must not matter:
	// dev mode reads no environment.
	p := startIngress(t, bin, map[string]string{"CLOUDFLARE_API_TOKEN": "real-token-must-be-ignored", "DOMAIN": "example.com"},
		"--dev", "--listen", "127.0.0.1:0", "--state-dir", state)
	waitFor(t, "the ready line", 60*time.Second, func() bool {
		if p.exited() {
			t.Fatalf("ingress --dev exited:\n%s", p.logs())
		}
		return strings.Contains(p.stdout.String(), "\nready\n")
	}, p.logs)
	out := p.stdout.String()
	if !strings.Contains(p.stderr.String(), "THIS IS NOT A TEE") {
		t.Fatalf("no NOT A TEE banner:\n%s", p.stderr.String())
	}
	verify := regexp.MustCompile(`(?m)^verify: (.*)$`).FindStringSubmatch(out)
	curl := regexp.MustCompile(`(?m)^(curl .*)$`).FindStringSubmatch(out)
	if verify == nil || curl == nil {
		t.Fatalf("no verify: or curl line in:\n%s", out)
	}
	if !strings.HasPrefix(verify[1], verifycli+" domain https://app.ingress.test --connect 127.0.0.1:") ||
		!strings.Contains(verify[1], "--ca-file "+filepath.Join(state, devCAFile)) {
		t.Fatalf("verify command %q: want the verifycli beside the binary and the trust files in the state dir", verify[1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := exec.CommandContext(ctx, "sh", "-c", verify[1]).CombinedOutput()
	if err != nil || !strings.Contains(string(res), "result: PASS") {
		t.Fatalf("the printed verify command failed (%v):\n%s", err, res)
	}
	if _, err := exec.LookPath("curl"); err == nil {
		res, err := exec.CommandContext(ctx, "sh", "-c", curl[1]+" -sS --max-time 20").CombinedOutput()
		if err != nil || !strings.HasPrefix(string(res), "hello from the tee-ingress demo backend") {
			t.Fatalf("the printed curl command failed (%v):\n%s", err, res)
		}
	} else {
		t.Log("curl not installed: the curl line is not run")
	}
	for _, f := range []string{devCAFile, devTDXRootFile, devDNSFile, "evidences/sha256sum.txt"} {
		if !fileExists(filepath.Join(state, f)) {
			t.Errorf("dev state dir lacks %s", f)
		}
	}
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d:\n%s", code, p.logs())
	}

	// A restart on the same state dir issues nothing: the dev CA comes back
	// at its address, the stored certificate is used, and it still verifies.
	p2 := startIngress(t, bin, nil, "--dev", "--listen", "127.0.0.1:0", "--state-dir", state)
	waitFor(t, "the ready line after a restart", 60*time.Second, func() bool {
		if p2.exited() {
			t.Fatalf("ingress --dev exited:\n%s", p2.logs())
		}
		return strings.Contains(p2.stdout.String(), "\nready\n")
	}, p2.logs)
	if logs := p2.stderr.String(); !strings.Contains(logs, `msg="using stored certificate"`) || strings.Contains(logs, `msg="obtained certificate"`) {
		t.Fatalf("the restart ordered a certificate:\n%s", logs)
	}
	verify = regexp.MustCompile(`(?m)^verify: (.*)$`).FindStringSubmatch(p2.stdout.String())
	res, err = exec.CommandContext(ctx, "sh", "-c", verify[1]).CombinedOutput()
	if err != nil || !strings.Contains(string(res), "result: PASS") {
		t.Fatalf("the verify command after a restart failed (%v):\n%s", err, res)
	}
	if code := p2.stop(); code != 0 {
		t.Fatalf("exit %d:\n%s", code, p2.logs())
	}
}

// TestDevReplicas: `ingress --dev --replicas 3` runs three instances of the
// app on consecutive ports with an embedded etcd; each printed verify
// command passes and all three serve the same certificate.
func TestDevReplicas(t *testing.T) {
	bin, _ := binaries(t)
	state := filepath.Join(t.TempDir(), "dev")
	// Port 0: each replica takes any free port (consecutive ports are
	// replicaArgs's job, tested alone; here they would race other tests).
	p := startIngress(t, bin, nil, "--dev", "--replicas", "3", "--listen", "127.0.0.1:0", "--state-dir", state)
	waitFor(t, "the ready line", 90*time.Second, func() bool {
		if p.exited() {
			t.Fatalf("ingress --dev --replicas 3 exited:\n%s", p.logs())
		}
		return strings.Contains(p.stdout.String(), "\nready\n")
	}, p.logs)
	verifies := regexp.MustCompile(`(?m)^verify: (.*--connect (\S+) .*)$`).FindAllStringSubmatch(p.stdout.String(), -1)
	if len(verifies) != 3 {
		t.Fatalf("%d verify lines, want 3:\n%s", len(verifies), p.stdout.String())
	}
	var addrs []string
	for _, v := range verifies {
		addrs = append(addrs, v[2])
	}
	if slices.Sort(addrs); len(slices.Compact(slices.Clone(addrs))) != 3 {
		t.Fatalf("replicas share a listen address: %v", addrs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for _, v := range verifies {
		res, err := exec.CommandContext(ctx, "sh", "-c", v[1]).CombinedOutput()
		if err != nil || !strings.Contains(string(res), "result: PASS") {
			t.Fatalf("verify for %s failed (%v):\n%s", v[2], err, res)
		}
	}
	if s := sameServed(t, devDomain, addrs...); s == "" {
		t.Fatal("no certificate served")
	}
	if n := strings.Count(p.stderr.String(), `msg="obtained certificate"`); n != 1 {
		t.Errorf("%d certificates obtained over three replicas, want 1", n)
	}
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d:\n%s", code, p.logs())
	}
}

// TestDevReplicasPortTaken: a replica that cannot listen stops the whole
// demo with exit 1 and says which, instead of serving with one missing.
func TestDevReplicasPortTaken(t *testing.T) {
	bin, _ := binaries(t)
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	port := held.Addr().(*net.TCPAddr).Port
	// Replica 0 gets port-1 (free or not, replica 1 on the held port fails).
	p := startIngress(t, bin, nil, "--dev", "--replicas", "2", "--listen", "127.0.0.1:"+strconv.Itoa(port-1), "--state-dir", t.TempDir())
	code := p.wait(60 * time.Second)
	if code != 1 || !strings.Contains(p.stderr.String(), "a replica stopped; stopping the others") || strings.Contains(p.stdout.String(), "\nready\n") {
		t.Fatalf("exit %d, want 1 with the stopping line and no ready line:\n%s", code, p.logs())
	}
}

func TestReplicaArgs(t *testing.T) {
	got, err := replicaArgs([]string{"--dev", "--listen=127.0.0.1:8000", "--metrics-listen=127.0.0.1:9000"}, 2)
	if err != nil || !slices.Contains(got, "--listen=127.0.0.1:8002") || !slices.Contains(got, "--metrics-listen=127.0.0.1:9002") {
		t.Errorf("replicaArgs = %v, %v", got, err)
	}
	if got, err := replicaArgs([]string{"--listen=127.0.0.1:0"}, 3); err != nil || got[len(got)-1] != "--listen=127.0.0.1:0" {
		t.Errorf("port 0: %v, %v", got, err)
	}
	if _, err := replicaArgs([]string{"--listen=127.0.0.1:65535"}, 1); err == nil || !strings.Contains(err.Error(), "no room for replica 1") {
		t.Errorf("overflow: %v", err)
	}
}

func TestDevReplicasRefused(t *testing.T) {
	bin, _ := binaries(t)
	for _, n := range []string{"0", "11", "three"} {
		p := startIngress(t, bin, nil, "--dev", "--replicas", n, "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
		if code := p.wait(30 * time.Second); code != 2 || !strings.Contains(p.stderr.String(), `--replicas="`+n+`" is not valid: want a number of instances from 1 to 10`) {
			t.Errorf("--replicas %s: exit %d:\n%s", n, code, p.stderr.String())
		}
	}
}

// TestDevPersist: `ingress --dev --challenge dns-persist-01` has no DNS
// credential in the ingress; the dev operator's webhook checks each
// request (token, quote) and creates the records; the printed verify
// command passes.
func TestDevPersist(t *testing.T) {
	bin, _ := binaries(t)
	p := startIngress(t, bin, nil, "--dev", "--challenge", "dns-persist-01", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	waitFor(t, "the ready line", 90*time.Second, func() bool {
		if p.exited() {
			t.Fatalf("ingress --dev exited:\n%s", p.logs())
		}
		return strings.Contains(p.stdout.String(), "\nready\n")
	}, p.logs)
	out := p.stdout.String()
	if !strings.Contains(out, "DNS records required for app.ingress.test") || !strings.Contains(out, "_validation-persist.app.ingress.test") {
		t.Fatalf("no record block on stdout:\n%s", out)
	}
	if logs := p.stderr.String(); !strings.Contains(logs, "dev operator created a record") || strings.Contains(logs, `msg="DNS records in place"`) {
		t.Fatalf("records not created by the dev operator, or a DNS provider was used:\n%s", logs)
	}
	verify := regexp.MustCompile(`(?m)^verify: (.*)$`).FindStringSubmatch(out)
	if verify == nil || !strings.Contains(verify[1], "--validation-methods dns-persist-01") {
		t.Fatalf("verify line: %v", verify)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := exec.CommandContext(ctx, "sh", "-c", verify[1]).CombinedOutput()
	if err != nil || !strings.Contains(string(res), "result: PASS") {
		t.Fatalf("the printed verify command failed (%v):\n%s", err, res)
	}
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d:\n%s", code, p.logs())
	}
}
