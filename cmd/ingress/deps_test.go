package main

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const depsHeader = `# Non-standard packages the ingress binary is built from (STYLE.md 2): every
# one is code the TEE runs. Listed for GOOS=linux GOARCH=amd64 CGO_ENABLED=0
# and -tags nodev, as the Dockerfile builds (--dev and its stand-ins are left
# out of the image). A change here is a change in what an auditor must
# trust: review it, then update this file with
#   UPDATE_DEPS=1 go test -run TestDeps ./cmd/ingress
`

// TestDeps fails when the packages linked into the binary change.
func TestDeps(t *testing.T) {
	cmd := exec.Command("go", "list", "-tags", "nodev", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".")
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=amd64", "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var got []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			got = append(got, l)
		}
	}
	slices.Sort(got)
	got = slices.Compact(got)
	head := depsHeader + leftOutLine() + "\n"
	if os.Getenv("UPDATE_DEPS") != "" {
		if err := os.WriteFile("deps.txt", []byte(head+strings.Join(got, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	b, err := os.ReadFile("deps.txt")
	if err != nil {
		t.Fatalf("%v: create it with UPDATE_DEPS=1 go test -run TestDeps ./cmd/ingress", err)
	}
	if !strings.Contains(string(b), leftOutLine()+"\n") {
		t.Errorf("deps.txt does not say which options the production build leaves out (want the line %q): run UPDATE_DEPS=1 go test -run TestDeps ./cmd/ingress", leftOutLine())
	}
	var want []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			want = append(want, l)
		}
	}
	var added, removed []string
	for _, p := range got {
		if !slices.Contains(want, p) {
			added = append(added, "+ "+p)
		}
	}
	for _, p := range want {
		if !slices.Contains(got, p) {
			removed = append(removed, "- "+p)
		}
	}
	if len(added)+len(removed) > 0 {
		t.Fatalf("the binary's dependencies changed (cmd/ingress/deps.txt):\n%s\n"+
			"Every new package is code the TEE must trust: review it, then run\n  UPDATE_DEPS=1 go test -run TestDeps ./cmd/ingress",
			strings.Join(append(added, removed...), "\n"))
	}
}

// leftOutLine names the options -tags nodev leaves out (--dev and the test
// hooks), from the option table, so deps.txt shows them.
func leftOutLine() string {
	var names []string
	for _, g := range groups {
		for _, o := range g.opts {
			if !o.devOnly {
				continue
			}
			if o.flag != "" {
				names = append(names, "--"+o.flag)
			} else {
				names = append(names, o.env)
			}
		}
	}
	return "# Left out of this build (-tags nodev): " + strings.Join(names, ", ")
}
