package dnscaa

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/libdns/libdns"

	"github.com/tee-ingress/tee-ingress/internal/fielderr"
	"github.com/tee-ingress/tee-ingress/internal/syncbuf"
)

func TestNewProviderSelection(t *testing.T) {
	all := map[string]string{
		"CLOUDFLARE_API_TOKEN": cfToken,
		"LINODE_API_TOKEN":     "linode-token-0123456789",
		"NAMECHEAP_USERNAME":   "user", "NAMECHEAP_API_KEY": "nckey0123456789", "NAMECHEAP_CLIENT_IP": "203.0.113.7",
		"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "aws-secret-0123456789",
		"RFC2136_NAMESERVER": "127.0.0.1:5353", "RFC2136_TSIG_KEY": "tee-ingress", "RFC2136_TSIG_SECRET": "c2VjcmV0LXRzaWcta2V5LTAxMjM0NTY3",
	}
	without := func(keys ...string) map[string]string {
		m := map[string]string{}
		for k, v := range all {
			m[k] = v
		}
		for _, k := range keys {
			delete(m, k)
		}
		return m
	}
	// auto walks the documented order.
	order := []struct {
		unset []string
		want  string
	}{
		{nil, "cloudflare"},
		{[]string{"CLOUDFLARE_API_TOKEN"}, "linode"},
		{[]string{"CLOUDFLARE_API_TOKEN", "LINODE_API_TOKEN"}, "namecheap"},
		{[]string{"CLOUDFLARE_API_TOKEN", "LINODE_API_TOKEN", "NAMECHEAP_API_KEY"}, "route53"},
		{[]string{"CLOUDFLARE_API_TOKEN", "LINODE_API_TOKEN", "NAMECHEAP_API_KEY", "AWS_ACCESS_KEY_ID"}, "rfc2136"},
	}
	for _, c := range order {
		for _, name := range []string{"", "auto", "AUTO"} {
			p, err := NewProvider(ProviderConfig{Name: name, Lookup: lookupMap(without(c.unset...))})
			if err != nil {
				t.Fatalf("auto without %v: %v", c.unset, err)
			}
			if p.Name() != c.want {
				t.Errorf("auto without %v = %s, want %s", c.unset, p.Name(), c.want)
			}
		}
	}
	// Each by name.
	for _, name := range Providers() {
		p, err := NewProvider(ProviderConfig{Name: name, Lookup: lookupMap(all)})
		if err != nil || p.Name() != name {
			t.Errorf("%s: %v %v", name, p, err)
		}
		req, _ := ProviderVariables(name)
		if len(req) == 0 {
			t.Errorf("%s has no required variables", name)
		}
	}
	if r, o := ProviderVariables("nope"); r != nil || o != nil {
		t.Error("variables for an unknown provider")
	}

	bad := []struct {
		name string
		vars map[string]string
		want []string
	}{
		{"unknown", all, []string{`Name="unknown"`, "cloudflare, linode, namecheap, route53, rfc2136 or auto"}},
		{"auto", map[string]string{"CLOUDFLARE_API_TOKEN": ""}, []string{"auto", "CLOUDFLARE_API_TOKEN, LINODE_API_TOKEN, NAMECHEAP_API_KEY, AWS_ACCESS_KEY_ID, RFC2136_NAMESERVER"}},
		{"cloudflare", nil, []string{`Name="cloudflare"`, "CLOUDFLARE_API_TOKEN"}},
		{"namecheap", map[string]string{"NAMECHEAP_API_KEY": "k0123456"}, []string{"NAMECHEAP_USERNAME, NAMECHEAP_CLIENT_IP"}},
		{"namecheap", without("x"), nil}, // fine
		{"route53", map[string]string{"AWS_ACCESS_KEY_ID": "AKIA"}, []string{"AWS_SECRET_ACCESS_KEY"}},
		{"rfc2136", map[string]string{"RFC2136_NAMESERVER": "ns"}, []string{"RFC2136_TSIG_KEY, RFC2136_TSIG_SECRET"}},
	}
	for _, c := range bad {
		_, err := NewProvider(ProviderConfig{Name: c.name, Lookup: lookupMap(c.vars)})
		if c.want == nil {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if err == nil || !errors.Is(err, ErrConfig) || !isField(err, "Name") {
			t.Errorf("%s %v: err = %v, want ErrConfig", c.name, c.vars, err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", c.name, err, w)
			}
		}
	}
}

func TestNewProviderBadValues(t *testing.T) {
	secret := "s3cr3t-value-that-must-not-leak"
	cases := []struct {
		name string
		vars map[string]string
		want string
	}{
		{"cloudflare", map[string]string{"CLOUDFLARE_API_TOKEN": secret + " \n"[:1] + "x"}, "CLOUDFLARE_API_TOKEN contains whitespace"},
		{"rfc2136", map[string]string{"RFC2136_NAMESERVER": "127.0.0.1", "RFC2136_TSIG_KEY": "k", "RFC2136_TSIG_SECRET": secret + "!"}, "RFC2136_TSIG_SECRET is not base64"},
		{"rfc2136", map[string]string{"RFC2136_NAMESERVER": "127.0.0.1", "RFC2136_TSIG_KEY": "k", "RFC2136_TSIG_SECRET": "c2VjcmV0", "RFC2136_TSIG_ALGORITHM": "hmac-md5"}, "RFC2136_TSIG_ALGORITHM"},
		{"rfc2136", map[string]string{"RFC2136_NAMESERVER": "ns.example:53:1", "RFC2136_TSIG_KEY": "k", "RFC2136_TSIG_SECRET": "c2VjcmV0"}, "RFC2136_NAMESERVER"},
		{"rfc2136", map[string]string{"RFC2136_NAMESERVER": "ns", "RFC2136_TSIG_KEY": "bad key", "RFC2136_TSIG_SECRET": "c2VjcmV0"}, "RFC2136_TSIG_KEY"},
		{"namecheap", map[string]string{"NAMECHEAP_USERNAME": "u", "NAMECHEAP_API_KEY": secret, "NAMECHEAP_CLIENT_IP": "myhost"}, "NAMECHEAP_CLIENT_IP"},
		{"route53", map[string]string{"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": secret, "AWS_ROLE_ARN": "role"}, "AWS_ROLE_ARN"},
	}
	for _, c := range cases {
		_, err := NewProvider(ProviderConfig{Name: c.name, Lookup: lookupMap(c.vars)})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %v: err = %v, want %q", c.name, c.vars, err, c.want)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("%s: error leaks the secret: %v", c.name, err)
		}
		// What cmd/ingress reports: the field error, renamed.
		renamed := fielderr.Rename(err, map[string]string{"Name": "DNS_PROVIDER"})
		if !strings.HasPrefix(renamed.Error(), "DNS_PROVIDER=") || strings.Contains(renamed.Error(), secret) {
			t.Errorf("%s: renamed error %q", c.name, renamed)
		}
		for e := error(renamed); e != nil; e = errors.Unwrap(e) {
			if strings.Contains(e.Error(), secret) {
				t.Errorf("%s: an error inside leaks the secret: %T %v", c.name, e, e)
			}
		}
	}

	// The RFC2136 defaults.
	p, err := NewProvider(ProviderConfig{Name: "rfc2136", Lookup: lookupMap(map[string]string{
		"RFC2136_NAMESERVER": "ns.example.net", "RFC2136_TSIG_KEY": "tee-ingress.", "RFC2136_TSIG_SECRET": "c2VjcmV0",
	})})
	if err != nil {
		t.Fatal(err)
	}
	if r := p.p.(interface {
		GetRecords(context.Context, string) ([]libdns.Record, error)
	}); r == nil {
		t.Fatal("no provider")
	}
}

func TestLinodeKeepsDefaultLoggers(t *testing.T) {
	prevSlog, prevOut, prevFlags := slog.Default(), log.Writer(), log.Flags()
	p, err := NewProvider(ProviderConfig{Name: "linode", Lookup: lookupMap(map[string]string{"LINODE_API_TOKEN": "tok0123456789"})})
	if err != nil {
		t.Fatal(err)
	}
	// The first call initialises the library (a cancelled context keeps
	// the request in the process).
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.ListZones(ctx); err == nil {
		t.Fatal("a cancelled call succeeded")
	}
	if slog.Default() != prevSlog || log.Writer() != prevOut || log.Flags() != prevFlags {
		t.Fatal("the linode provider changed the process-wide loggers")
	}
	if _, ok := p.p.(*linodeAdapter); !ok {
		t.Fatalf("provider is %T", p.p)
	}
}

// fakeProvider is a Provider whose calls do what the test says.
type fakeProvider struct {
	get    func(ctx context.Context) ([]libdns.Record, error)
	append func(ctx context.Context, recs []libdns.Record) ([]libdns.Record, error)
	zones  []string
}

func (f *fakeProvider) GetRecords(ctx context.Context, zone string) ([]libdns.Record, error) {
	return f.get(ctx)
}

func (f *fakeProvider) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	return f.append(ctx, recs)
}

func (f *fakeProvider) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	return recs, nil
}

func TestClient(t *testing.T) {
	secret := "provider-secret-123456"
	f := &fakeProvider{
		get: func(ctx context.Context) ([]libdns.Record, error) {
			<-ctx.Done() // a provider that only returns when the deadline passes
			return nil, fmt.Errorf("request with key %s: %w", secret, ctx.Err())
		},
		append: func(ctx context.Context, recs []libdns.Record) ([]libdns.Record, error) {
			if len(recs) > 1 {
				return recs[:1], nil // silently drops one, as libdns/linode does
			}
			panic("nil map in library")
		},
	}
	logs := &syncbuf.Buffer{}
	c := NewClient("fake", f, 100*time.Millisecond, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), secret, "ab")
	ctx := context.Background()

	start := time.Now()
	_, err := c.GetRecords(ctx, "example.test.")
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("took %s", took)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "fake: get records in zone example.test: no answer within 100ms") {
		t.Errorf("err = %v", err)
	}
	if strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "[redacted]") {
		t.Errorf("secret not redacted: %v", err)
	}
	if strings.Contains(logs.String(), secret) {
		t.Error("secret in the log")
	}

	two := []libdns.Record{libdns.TXT{Name: "a", Text: "1"}, libdns.TXT{Name: "a", Text: "2"}}
	if _, err := c.AppendRecords(ctx, "example.test", two); err == nil || !strings.Contains(err.Error(), "added 1 of 2 records") {
		t.Errorf("short append: %v", err)
	}
	if _, err := c.AppendRecords(ctx, "example.test", two[:1]); err == nil || !strings.Contains(err.Error(), "panicked: nil map in library") {
		t.Errorf("panic: %v", err)
	}
	if _, err := c.ListZones(ctx); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("ListZones: %v", err)
	}
	if c.zoneArg("example.test") != "example.test." {
		t.Error("zone form")
	}
	// Short secrets are not redacted (they would mangle unrelated text).
	if strings.Contains(err.Error(), "[redacted]b") {
		t.Error("short secret redacted")
	}
}

// isField: err is a *fielderr.Error for field.
func isField(err error, field string) bool {
	var fe *fielderr.Error
	return errors.As(err, &fe) && fe.Field == field
}
