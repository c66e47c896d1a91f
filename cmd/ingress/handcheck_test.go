package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// readmeBlock returns the shell block that follows marker in README.md.
func readmeBlock(t *testing.T, marker string) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), marker)
	if !ok {
		t.Fatalf("README.md has no %q", marker)
	}
	_, rest, _ = strings.Cut(rest, "```sh\n")
	block, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatalf("no shell block after %q", marker)
	}
	return block
}

// TestREADMEHandCheck runs the README's "Check by hand" commands as they
// are written against `ingress --dev`. Only the domain (D=) is changed, and
// curl, openssl and dig are wrapped to reach the dev instance on loopback
// (its port, CA and DNS server) instead of the internet. Every file must
// check OK and the quote must bind sha256sum.txt; the four-file variant
// with --ignore-missing passes too.
func TestREADMEHandCheck(t *testing.T) {
	for _, tool := range []string{"curl", "openssl", "jq", "dig", "sha256sum", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (.ci/run installs it)", tool)
		}
	}
	bin, _ := binaries(t)
	state := filepath.Join(t.TempDir(), "dev")
	p := startIngress(t, bin, nil, "--dev", "--listen", "127.0.0.1:0", "--state-dir", state)
	waitFor(t, "the ready line", 60*time.Second, func() bool {
		if p.exited() {
			t.Fatalf("ingress --dev exited:\n%s", p.logs())
		}
		return strings.Contains(p.stdout.String(), "\nready\n")
	}, p.logs)
	addr := regexp.MustCompile(`--connect (\S+)`).FindStringSubmatch(p.stdout.String())[1]
	host, port, _ := net.SplitHostPort(addr)
	dnsAddr, err := os.ReadFile(filepath.Join(state, devDNSFile))
	if err != nil {
		t.Fatal(err)
	}
	dnsHost, dnsPort, _ := net.SplitHostPort(strings.TrimSpace(string(dnsAddr)))
	ca := filepath.Join(state, devCAFile)

	wrappers := t.TempDir()
	for name, script := range map[string]string{
		"curl": `exec "$REAL_CURL" --cacert "$DEV_CA" --connect-to "::$DEV_HOST:$DEV_PORT" "$@"`,
		// s_client -connect D:443 goes to the dev port; x509 is untouched.
		"openssl": `args=(); for a in "$@"; do case "$a" in *:443) a="$DEV_HOST:$DEV_PORT";; esac; args+=("$a"); done; exec "$REAL_OPENSSL" "${args[@]}"`,
		"dig":     `exec "$REAL_DIG" @"$DNS_HOST" -p "$DNS_PORT" "$@"`,
	} {
		if err := os.WriteFile(filepath.Join(wrappers, name), []byte("#!/usr/bin/env bash\n"+script+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	real := func(n string) string { p, _ := exec.LookPath(n); return p }
	env := append(os.Environ(), "PATH="+wrappers+":"+os.Getenv("PATH"), "REAL_CURL="+real("curl"), "REAL_OPENSSL="+real("openssl"),
		"REAL_DIG="+real("dig"), "DEV_CA="+ca, "DEV_HOST="+host, "DEV_PORT="+port, "DNS_HOST="+dnsHost, "DNS_PORT="+dnsPort)

	block := readmeBlock(t, "Check by hand")
	if !strings.Contains(block, "D=app.example.com\n") {
		t.Fatalf("the README block no longer starts with D=app.example.com:\n%s", block)
	}
	block = strings.Replace(block, "D=app.example.com\n", "D="+devDomain+"\n", 1)
	work := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", block)
	cmd.Dir, cmd.Env = work, env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's hand check failed (%v):\n%s", err, out)
	}
	text := string(out)
	oks := regexp.MustCompile(`(?m)^\S+: OK$`).FindAllString(text, -1)
	sums, _ := os.ReadFile(filepath.Join(work, "ev", "sha256sum.txt"))
	if n := strings.Count(string(sums), "\n"); n < 4 || len(oks) != n {
		t.Fatalf("%d files OK, sha256sum.txt lists %d:\n%s", len(oks), n, text)
	}
	fps := regexp.MustCompile(`(?m)^(?:SHA256|sha256) Fingerprint=(\S+)$`).FindAllStringSubmatch(text, -1)
	if len(fps) != 2 || fps[0][1] != fps[1][1] {
		t.Fatalf("the served and published fingerprints differ or are missing:\n%s", text)
	}
	if !regexp.MustCompile(`(?m)^1$`).MatchString(text) || !strings.Contains(text, "accounturi=") {
		t.Fatalf("no quote binding (grep -c 1) or no CAA record with the account:\n%s", text)
	}

	// The four-file procedure: a subset, checked with --ignore-missing.
	four := t.TempDir()
	script := `D=` + devDomain + `
for f in acme-account.json "cert-$D.pem" sha256sum.txt quote.json; do curl -fsSO "https://$D/evidences/$f"; done
sha256sum -c --ignore-missing sha256sum.txt`
	cmd = exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir, cmd.Env = four, env
	if out, err := cmd.CombinedOutput(); err != nil || strings.Count(string(out), ": OK") != 2 {
		t.Fatalf("four-file check (%v):\n%s", err, out)
	}
	if code := p.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
