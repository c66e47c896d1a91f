package dnscaa

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/libdns/libdns"

	"github.com/tee-ingress/tee-ingress/internal/fielderr"
)

// Provider is what this package needs from a DNS provider: read a zone, add
// records, delete exact records. Every libdns provider satisfies it. A
// provider that can also list its zones (libdns.ZoneLister) lets zone
// discovery skip the DNS query for the SOA.
//
// SetRecords is deliberately not part of it: its semantics differ between
// providers (libdns/cloudflare v0.2.2 PATCHes one record per call, so two
// records of one name and type overwrite each other), and append-then-delete
// expresses every change this package makes.
type Provider interface {
	libdns.RecordGetter
	libdns.RecordAppender
	libdns.RecordDeleter
}

// DefaultCallTimeout bounds each provider call when no timeout is configured.
const DefaultCallTimeout = 30 * time.Second

// Client is a Provider with a name, a deadline on every call, zone names in
// the form its provider expects, and secrets removed from its errors. Build
// one with NewProvider, or wrap any Provider with NewClient.
type Client struct {
	name    string
	p       Provider
	timeout time.Duration
	secrets []string
	log     *slog.Logger
	observe func(Call)
	// dotlessZones: the provider wants "example.com", not "example.com."
	// (libdns/cloudflare looks the zone up by that exact name).
	dotlessZones bool
	// cnameSiblings: the provider serves other types beside a CNAME at one
	// name (Cloudflare does; RFC 1034 servers such as BIND and Route 53
	// refuse it).
	cnameSiblings bool
}

// Call is one provider call as an observer sees it (ProviderConfig.Observer).
type Call struct {
	Provider string        // "cloudflare", "route53", ...
	Op       string        // "get records", "append records", "delete records", "list zones"
	Zone     string        // without the trailing dot; "" for list zones
	Records  int           // records sent (append, delete); 0 otherwise
	Took     time.Duration // from the call to its answer or deadline
	Err      error         // nil: it succeeded; else the error returned, secrets redacted
}

var (
	_ Provider          = (*Client)(nil)
	_ libdns.ZoneLister = (*Client)(nil)
)

// NewClient wraps p so that every call runs under timeout (zero means
// DefaultCallTimeout). name appears in errors and logs. Secrets listed are
// replaced by "[redacted]" in every error the client returns.
func NewClient(name string, p Provider, timeout time.Duration, logger *slog.Logger, secrets ...string) *Client {
	if timeout <= 0 {
		timeout = DefaultCallTimeout
	}
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var keep []string
	for _, s := range secrets {
		// Very short values would redact unrelated text and protect nothing.
		if len(s) >= 4 {
			keep = append(keep, s)
		}
	}
	return &Client{name: name, p: p, timeout: timeout, secrets: keep, log: logger}
}

// asClient returns p if it is a *Client, else p wrapped with the defaults.
func asClient(p Provider, logger *slog.Logger) *Client {
	if c, ok := p.(*Client); ok {
		return c
	}
	return NewClient("dns provider", p, 0, logger)
}

// Name is the provider's name, e.g. "cloudflare".
func (c *Client) Name() string { return c.name }

// Timeout is the deadline of each call.
func (c *Client) Timeout() time.Duration { return c.timeout }

// CNAMESiblings reports whether the provider keeps other records (a CAA) at a
// name that has a CNAME.
func (c *Client) CNAMESiblings() bool { return c.cnameSiblings }

func (c *Client) zoneArg(zone string) string {
	if c.dotlessZones {
		return unfqdn(zone)
	}
	return fqdn(zone)
}

// GetRecords implements libdns.RecordGetter under the call deadline.
func (c *Client) GetRecords(ctx context.Context, zone string) ([]libdns.Record, error) {
	var out []libdns.Record
	err := c.call(ctx, "get records", zone, 0, func(ctx context.Context) (err error) {
		out, err = c.p.GetRecords(ctx, c.zoneArg(zone))
		return err
	})
	return out, err
}

// AppendRecords implements libdns.RecordAppender under the call deadline. A
// provider that reports fewer records added than asked for (libdns/linode
// skips records it fails to create) is an error.
func (c *Client) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	var out []libdns.Record
	err := c.call(ctx, "append records", zone, len(recs), func(ctx context.Context) (err error) {
		out, err = c.p.AppendRecords(ctx, c.zoneArg(zone), recs)
		if err == nil && len(out) < len(recs) {
			err = fmt.Errorf("provider added %d of %d records", len(out), len(recs))
		}
		return err
	})
	return out, err
}

// DeleteRecords implements libdns.RecordDeleter under the call deadline.
func (c *Client) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	var out []libdns.Record
	err := c.call(ctx, "delete records", zone, len(recs), func(ctx context.Context) (err error) {
		out, err = c.p.DeleteRecords(ctx, c.zoneArg(zone), recs)
		return err
	})
	return out, err
}

// ListZones implements libdns.ZoneLister under the call deadline. For a
// provider that cannot list zones it returns an error wrapping
// errors.ErrUnsupported, and zone discovery falls back to DNS.
func (c *Client) ListZones(ctx context.Context) ([]libdns.Zone, error) {
	zl, ok := c.p.(libdns.ZoneLister)
	if !ok {
		return nil, fmt.Errorf("%s: list zones: %w", c.name, errors.ErrUnsupported)
	}
	var out []libdns.Zone
	err := c.call(ctx, "list zones", "", 0, func(ctx context.Context) (err error) {
		out, err = zl.ListZones(ctx)
		return err
	})
	return out, err
}

func (c *Client) call(ctx context.Context, op, zone string, n int, f func(context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	start := time.Now()
	err := protect(cctx, f)
	took := time.Since(start)
	attrs := []any{"provider", c.name, "op", op, "took", took.Round(time.Millisecond)}
	if zone != "" {
		attrs = append(attrs, "zone", unfqdn(zone))
	}
	if n > 0 {
		attrs = append(attrs, "records", n)
	}
	if err == nil {
		c.log.Debug("dns provider call", attrs...)
		c.report(op, zone, n, took, nil)
		return nil
	}
	where := op
	if zone != "" {
		where += " in zone " + unfqdn(zone)
	}
	if cctx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
		err = fmt.Errorf("%s: %s: no answer within %s: %w", c.name, where, c.timeout, err)
	} else {
		err = fmt.Errorf("%s: %s: %w", c.name, where, err)
	}
	err = c.redact(err)
	c.log.Debug("dns provider call failed", append(attrs, "err", err.Error())...)
	c.report(op, zone, n, took, err)
	return err
}

func (c *Client) report(op, zone string, n int, took time.Duration, err error) {
	if c.observe != nil {
		c.observe(Call{Provider: c.name, Op: op, Zone: unfqdn(zone), Records: n, Took: took, Err: err})
	}
}

// protect runs f, turning a panic into an error: libdns/cloudflare v0.2.2
// dereferences result_info without checking it, and a proxy or an API change
// must not take the ingress down with it.
func protect(ctx context.Context, f func(context.Context) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("provider library panicked: %v", r)
		}
	}()
	return f(ctx)
}

// redact replaces every secret in err's message. The chain stays reachable
// through Unwrap for errors.Is and errors.As (context.DeadlineExceeded).
func (c *Client) redact(err error) error {
	msg := err.Error()
	clean := msg
	for _, s := range c.secrets {
		clean = strings.ReplaceAll(clean, s, "[redacted]")
	}
	return &redactedError{msg: clean, err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// ProviderConfig selects and configures a DNS provider.
type ProviderConfig struct {
	// Name is the provider: "cloudflare", "route53", "linode", "namecheap",
	// "rfc2136" or "auto". Empty means "auto": the first provider, in the
	// order of Providers, whose detecting variable is set.
	Name string
	// Lookup returns a credential variable (os.LookupEnv in cmd/ingress). A
	// variable set to the empty string counts as unset. nil: no variable is
	// set.
	Lookup func(string) (string, bool)
	// HTTPClient carries Cloudflare API calls (tests pass the emulator's).
	// nil: http.DefaultClient, under the call deadline. The other providers'
	// libraries build their own clients.
	HTTPClient *http.Client
	// CallTimeout bounds every provider call. Zero: DefaultCallTimeout.
	CallTimeout time.Duration
	// Logger gets one debug line per provider call, never a secret. nil:
	// discard.
	Logger *slog.Logger
	// Observer is told of every provider call when it ends, on the caller's
	// goroutine (metrics use it; keep it quick). nil: nobody is told.
	Observer func(Call)

	// namecheapEndpoint points libdns/namecheap at a test server.
	namecheapEndpoint string
}

// ErrConfig is wrapped by every configuration error from NewProvider, with a
// *fielderr.Error naming the field Name.
var ErrConfig = errors.New("dns provider configuration")

// NewProvider builds the provider cfg names from its credential variables.
// Errors name the variable to set and the accepted values; they never
// contain a credential.
func NewProvider(cfg ProviderConfig) (*Client, error) {
	lookup := func(k string) string {
		if cfg.Lookup == nil {
			return ""
		}
		v, ok := cfg.Lookup(k)
		if !ok {
			return ""
		}
		return strings.TrimSpace(v)
	}
	name := strings.ToLower(strings.TrimSpace(cfg.Name))
	var spec *providerSpec
	switch name {
	case "", "auto":
		for i := range providerSpecs {
			if lookup(providerSpecs[i].detect) != "" {
				spec = &providerSpecs[i]
				break
			}
		}
		if spec == nil {
			var vars []string
			for _, s := range providerSpecs {
				vars = append(vars, s.detect)
			}
			return nil, fmt.Errorf("%w: %w", ErrConfig, &fielderr.Error{Field: "Name", Value: "auto",
				Problem:  "no provider credentials are set: set one of " + strings.Join(vars, ", "),
				Accepted: "a provider whose credentials are set, or one of " + strings.Join(Providers(), ", ")})
		}
	default:
		for i := range providerSpecs {
			if providerSpecs[i].name == name {
				spec = &providerSpecs[i]
			}
		}
		if spec == nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, &fielderr.Error{Field: "Name", Value: cfg.Name,
				Problem: "not a known provider", Accepted: strings.Join(Providers(), ", ") + " or auto"})
		}
	}
	vals := map[string]string{}
	var missing []string
	for _, k := range spec.required {
		v := lookup(k)
		if v == "" {
			missing = append(missing, k)
		}
		vals[k] = v
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrConfig, &fielderr.Error{Field: "Name", Value: spec.name,
			Problem: "needs " + strings.Join(missing, ", ") + " set", Accepted: "all of " + strings.Join(spec.required, ", ") + " set"})
	}
	for _, k := range spec.optional {
		vals[k] = lookup(k)
	}
	var secrets []string
	for _, k := range spec.secrets {
		if v := vals[k]; v != "" {
			secrets = append(secrets, v)
		}
	}
	c := NewClient(spec.name, nil, cfg.CallTimeout, cfg.Logger, secrets...)
	p, err := spec.build(vals, cfg, c)
	if err != nil {
		// The credential error is redacted before it is wrapped: a caller
		// unwrapping the field error still never sees a secret.
		return nil, fmt.Errorf("%w: %w", ErrConfig, &fielderr.Error{Field: "Name", Value: spec.name, Err: c.redact(err)})
	}
	c.p = p
	c.observe = cfg.Observer
	return c, nil
}

// Providers lists the provider names in the order auto tries them.
func Providers() []string {
	var out []string
	for _, s := range providerSpecs {
		out = append(out, s.name)
	}
	return out
}

// ProviderVariables lists the credential variables of a provider, required
// ones first, for usage text. It returns nil for an unknown name.
func ProviderVariables(name string) (required, optional []string) {
	for _, s := range providerSpecs {
		if s.name == name {
			return append([]string(nil), s.required...), append([]string(nil), s.optional...)
		}
	}
	return nil, nil
}

type providerSpec struct {
	name string
	// detect is the variable whose presence makes auto pick this provider
	// (dstack-ingress's DETECT_ENV where it has one).
	detect   string
	required []string
	optional []string
	secrets  []string
	build    func(v map[string]string, cfg ProviderConfig, c *Client) (Provider, error)
}

// providerSpecs is in auto-detection order: dstack-ingress's order
// (cloudflare, linode, namecheap, then route53, added later), then rfc2136,
// which dstack-ingress does not have. Variable names are dstack-ingress's;
// rfc2136's are lego's, since dstack-ingress has none.
var providerSpecs = []providerSpec{
	{
		name:     "cloudflare",
		detect:   "CLOUDFLARE_API_TOKEN",
		required: []string{"CLOUDFLARE_API_TOKEN"},
		secrets:  []string{"CLOUDFLARE_API_TOKEN"},
		build:    buildCloudflare,
	},
	{
		name:     "linode",
		detect:   "LINODE_API_TOKEN",
		required: []string{"LINODE_API_TOKEN"},
		secrets:  []string{"LINODE_API_TOKEN"},
		build:    buildLinode,
	},
	{
		name:     "namecheap",
		detect:   "NAMECHEAP_API_KEY",
		required: []string{"NAMECHEAP_USERNAME", "NAMECHEAP_API_KEY", "NAMECHEAP_CLIENT_IP"},
		secrets:  []string{"NAMECHEAP_API_KEY"},
		build:    buildNamecheap,
	},
	{
		name:     "route53",
		detect:   "AWS_ACCESS_KEY_ID",
		required: []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},
		optional: []string{"AWS_REGION", "AWS_ROLE_ARN", "AWS_SESSION_TOKEN"},
		secrets:  []string{"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"},
		build:    buildRoute53,
	},
	{
		name:     "rfc2136",
		detect:   "RFC2136_NAMESERVER",
		required: []string{"RFC2136_NAMESERVER", "RFC2136_TSIG_KEY", "RFC2136_TSIG_SECRET"},
		optional: []string{"RFC2136_TSIG_ALGORITHM"},
		secrets:  []string{"RFC2136_TSIG_SECRET"},
		build:    buildRFC2136,
	},
}
