package acme

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/internal/fielderr"
)

func TestFileKeySourceCreatesPrivateFileAndReloadsSameKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "account.key")
	src := &FileKeySource{Path: path}
	k1, err := src.AccountKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	k2, err := (&FileKeySource{Path: path}).AccountKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !k1.(*ecdsa.PrivateKey).Equal(k2) {
		t.Fatal("reloaded key differs from the stored one")
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temporary files left beside the key: %v", entries)
	}
}

func TestFileKeySourceRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]struct{ content, want string }{
		"not pem":   {"hello", "no PEM block"},
		"wrong pem": {"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", `PEM block "CERTIFICATE"`},
		"garbage":   {"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n", "account key"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
			if err := os.WriteFile(p, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := (&FileKeySource{Path: p}).AccountKey(context.Background())
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("error %v, want it to name %q and the file", err, c.want)
			}
			if got, _ := os.ReadFile(p); string(got) != c.content {
				t.Fatal("a bad key file was overwritten")
			}
		})
	}
}

func TestCheckDomainName(t *testing.T) {
	good := []string{"example.test", "a.b.example.test", "*.example.test", "xn--bcher-kva.example", "a-b.c0.test"}
	for _, d := range good {
		if err := CheckDomainName(d); err != nil {
			t.Errorf("%q rejected: %v", d, err)
		}
	}
	bad := map[string]string{
		"":                                "empty",
		"localhost":                       "single label",
		"Example.test":                    "canonical form",
		"exa mple.test":                   `character " "`,
		"-a.test":                         "hyphen",
		"a..test":                         "empty label",
		"a.*.test":                        "whole first label",
		"**.test":                         "whole first label",
		"*.":                              "whole first label",
		strings.Repeat("a", 64) + ".test": "longer than 63",
		"example.test.":                   "canonical form",
		"under_score.test":                `character "_"`,
	}
	for d, want := range bad {
		err := CheckDomainName(d)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want it to mention %q", d, err, want)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	keys := &FileKeySource{Path: filepath.Join(t.TempDir(), "k")}
	solver := noSolver{}
	cases := map[string]struct {
		cfg   Config
		field string // the Config field the *fielderr.Error names
		want  string
	}{
		"no keys":       {Config{StateDir: "/x", Solver: solver}, "Keys", "no account key source"},
		"no state":      {Config{Keys: keys, Solver: solver}, "StateDir", "no state directory"},
		"no solver":     {Config{Keys: keys, StateDir: "/x"}, "Solver", "no challenge solver"},
		"bad challenge": {Config{Keys: keys, StateDir: "/x", Solver: solver, Challenge: "http-01"}, "Challenge", "want dns-01, tls-alpn-01 or dns-persist-01"},
		"http dir":      {Config{Keys: keys, StateDir: "/x", Solver: solver, DirectoryURL: "http://ca/dir"}, "DirectoryURL", "not https"},
		"half eab":      {Config{Keys: keys, StateDir: "/x", Solver: solver, EAB: &EAB{KID: "k"}}, "EAB", "both a key id and an HMAC key"},
		"neg window":    {Config{Keys: keys, StateDir: "/x", Solver: solver, RenewBefore: -time.Hour}, "RenewBefore", "negative renewal window"},
	}
	for name, c := range cases {
		_, err := New(c.cfg)
		var fe *fielderr.Error
		if !errors.As(err, &fe) || fe.Field != c.field || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want a field error for %s mentioning %q", name, err, c.field, c.want)
		}
	}
}

type noSolver struct{}

func (noSolver) Present(domain, token, keyAuth string) error { return nil }
func (noSolver) CleanUp(domain, token, keyAuth string) error { return nil }

func TestBackoffDoublesWithJitterAndHonoursRetryAfter(t *testing.T) {
	m, err := New(Config{Keys: &FileKeySource{Path: "k"}, StateDir: "s", Solver: noSolver{},
		Backoff: Backoff{Initial: time.Second, Max: 16 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	for n, full := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 5: 16 * time.Second, 9: 16 * time.Second} {
		for range 200 {
			d := m.backoff(n, 0)
			if d < full/2 || d > full {
				t.Fatalf("failure %d: wait %v outside [%v, %v]", n, d, full/2, full)
			}
		}
	}
	if d := m.backoff(1, time.Hour); d != time.Hour {
		t.Fatalf("Retry-After of 1h gave wait %v", d)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if d, err := parseRetryAfter("120", now); err != nil || d != 2*time.Minute {
		t.Fatalf("seconds form: %v %v", d, err)
	}
	if d, err := parseRetryAfter(now.Add(time.Hour).Format(http.TimeFormat), now); err != nil || d != time.Hour {
		t.Fatalf("date form: %v %v", d, err)
	}
	if _, err := parseRetryAfter("soon", now); err == nil {
		t.Fatal("junk accepted")
	}
}

func TestSetFileNameKeepsWildcardApart(t *testing.T) {
	if a, b := setFileName([]string{"*.example.test"}), setFileName([]string{"example.test"}); a == b || strings.Contains(a, "*") {
		t.Fatalf("wildcard file %q, plain %q", a, b)
	}
}

func TestEnsureRefusesBadDomainsBeforeContactingTheCA(t *testing.T) {
	// The directory URL points nowhere: any contact would fail differently.
	m, err := New(Config{Keys: &FileKeySource{Path: filepath.Join(t.TempDir(), "k")}, StateDir: t.TempDir(),
		Solver: noSolver{}, Challenge: TLSALPN01, DirectoryURL: "https://127.0.0.1:1/directory"})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		domains []string
		want    string
	}{
		"wildcard with tls-alpn-01": {[]string{"*.example.test"}, "cannot validate the wildcard *.example.test"},
		"invalid name":              {[]string{"exa mple.test"}, `character " "`},
		"duplicate":                 {[]string{"a.example.test", "a.example.test"}, "listed twice"},
		"none":                      {nil, "no domains"},
	}
	for name, c := range cases {
		_, err := m.Ensure(context.Background(), c.domains)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to mention %q", name, err, c.want)
		}
	}
	if m.AccountURI() != "" {
		t.Fatal("an account was set up before validation passed")
	}
}
