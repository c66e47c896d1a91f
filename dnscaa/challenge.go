package dnscaa

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/go-acme/lego/v4/challenge"
	"github.com/libdns/libdns"
	"github.com/miekg/dns"

	"github.com/tee-ingress/tee-ingress/dnsread"
	"github.com/tee-ingress/tee-ingress/internal/fielderr"
)

// Defaults of ChallengeOptions.
const (
	DefaultPropagationTimeout = 3 * time.Minute
	DefaultPollInterval       = 2 * time.Second
	maxPollInterval           = 15 * time.Second
)

// Steps named in ChallengeError.
const (
	StepPresent     = "present"
	StepPropagation = "propagation"
	StepCleanup     = "cleanup"
)

// ChallengeError is every error of the DNS-01 provider: the domain, the step
// that failed, and the cause.
type ChallengeError struct {
	Domain string
	Step   string
	Err    error
}

func (e *ChallengeError) Error() string {
	return fmt.Sprintf("dns-01 for %s: %s: %v", e.Domain, e.Step, e.Err)
}

func (e *ChallengeError) Unwrap() error { return e.Err }

// ChallengeOptions configure the DNS-01 provider.
type ChallengeOptions struct {
	// Zone is DNS_ZONE, used for challenge names inside it. Empty: zones are
	// found with FindZone.
	Zone string
	// DelegationZone is DELEGATION_ZONE: challenge records are written at
	// "_acme-challenge.<domain>.<zone>", which the operator's CNAME on
	// "_acme-challenge.<domain>" must lead to (checked before writing).
	DelegationZone string
	// Resolver answers the CNAME, SOA and NS lookups. nil: the system's.
	Resolver *dnsread.Resolver
	// CheckServers, when set, are the "host:port" servers polled for the
	// value instead of the zone's authoritative servers (found through NS
	// lookups and queried on port 53).
	CheckServers []string
	// PropagationTimeout bounds the wait until every server answers the
	// value. Zero: DefaultPropagationTimeout.
	PropagationTimeout time.Duration
	// PollInterval is the first wait between polls; it grows by half each
	// time up to 15s. Zero: DefaultPollInterval.
	PollInterval time.Duration
	// Logger gets the steps of each challenge. nil: discard.
	Logger *slog.Logger
}

// ChallengeProvider is lego's DNS-01 challenge.Provider on top of a DNS
// provider. Present writes exactly one TXT value and returns once every
// authoritative server (or every CheckServers entry) answers it; CleanUp
// removes exactly that value. Values are tracked per name, so two challenges
// at one name (example.com and *.example.com) never remove each other's.
//
// lego runs its own propagation check after Present. Present has already
// waited, so configure lego's challenge with
//
//	dns01.WrapPreCheck(func(domain, fqdn, value string, check dns01.PreCheckFunc) (bool, error) { return true, nil })
//
// (lego's check dials port 53 of the authoritative servers, which fails on
// loopback test servers, and its resolvers are package-wide variables).
// Timeout returns a short interval because lego sleeps one interval before
// that check. lego still computes the challenge name with
// dns01.GetChallengeInfo, which looks up a CNAME through its package-wide
// recursive resolvers: give it the same resolvers as this provider with
// dns01.AddRecursiveNameservers, once per process.
type ChallengeProvider struct {
	c    *Client
	opts ChallengeOptions
	log  *slog.Logger

	mu      sync.Mutex
	names   map[string]*sync.Mutex // per challenge FQDN: serialises writes
	present map[presentKey]*presented
}

var (
	_ challenge.Provider        = (*ChallengeProvider)(nil)
	_ challenge.ProviderTimeout = (*ChallengeProvider)(nil)
)

type presentKey struct{ domain, value string }

// presented is a TXT value this provider wrote.
type presented struct {
	zone, name string // where it lives (name is an FQDN)
	count      int    // Present calls not yet cleaned up
	ours       bool   // false: the value was already there; never delete it
}

// NewChallengeProvider returns a DNS-01 provider writing through p (wrapped in
// a Client with the default call timeout unless it is one).
func NewChallengeProvider(p Provider, opts ChallengeOptions) (*ChallengeProvider, error) {
	if p == nil {
		return nil, errors.New("dns-01: no DNS provider")
	}
	if opts.DelegationZone != "" {
		z, err := parseHostname("the delegation zone", opts.DelegationZone, false)
		if err != nil {
			return nil, &fielderr.Error{Field: "DelegationZone", Value: opts.DelegationZone, Err: err}
		}
		opts.DelegationZone = z
	}
	if opts.Zone != "" {
		z, err := parseHostname("the DNS zone", opts.Zone, true)
		if err != nil {
			return nil, &fielderr.Error{Field: "Zone", Value: opts.Zone, Err: err}
		}
		opts.Zone = z
	}
	if opts.PropagationTimeout <= 0 {
		opts.PropagationTimeout = DefaultPropagationTimeout
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	servers := make([]string, 0, len(opts.CheckServers))
	for _, s := range opts.CheckServers {
		servers = append(servers, dnsread.WithPort(s))
	}
	opts.CheckServers = servers
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &ChallengeProvider{
		c: asClient(p, log), opts: opts, log: log,
		names: map[string]*sync.Mutex{}, present: map[presentKey]*presented{},
	}, nil
}

// Timeout implements challenge.ProviderTimeout: how long lego waits for its
// own check, and the interval it sleeps once before it (kept short: Present
// has waited for propagation already).
func (cp *ChallengeProvider) Timeout() (timeout, interval time.Duration) {
	return cp.opts.PropagationTimeout, 100 * time.Millisecond
}

// ChallengeRecord returns the challenge name and TXT value for domain and
// keyAuth, as lego's dns01.GetChallengeInfo does (FQDN and Value), without
// the CNAME lookup it makes through lego's package-wide resolvers.
func ChallengeRecord(domain, keyAuth string) (name, value string) {
	sum := sha256.Sum256([]byte(keyAuth))
	return ChallengeName(domain, ""), base64.RawURLEncoding.EncodeToString(sum[:])
}

// Present implements challenge.Provider.
func (cp *ChallengeProvider) Present(domain, token, keyAuth string) error {
	return cp.PresentContext(context.Background(), domain, keyAuth)
}

// CleanUp implements challenge.Provider.
func (cp *ChallengeProvider) CleanUp(domain, token, keyAuth string) error {
	return cp.CleanUpContext(context.Background(), domain, keyAuth)
}

// PresentContext writes the challenge value for domain and waits until it is
// visible. On failure nothing it wrote is left behind.
func (cp *ChallengeProvider) PresentContext(ctx context.Context, domain, keyAuth string) error {
	domain = strings.TrimPrefix(unfqdn(domain), "*.")
	cerr := func(step string, err error) error { return &ChallengeError{Domain: domain, Step: step, Err: err} }
	if _, err := ParseDomain(domain); err != nil {
		return cerr(StepPresent, err)
	}
	_, value := ChallengeRecord(domain, keyAuth)
	name, zone, err := cp.target(ctx, domain)
	if err != nil {
		return cerr(StepPresent, err)
	}
	log := cp.log.With("domain", domain, "name", name)
	if err := cp.write(ctx, domain, zone, name, value); err != nil {
		return cerr(StepPresent, err)
	}
	log.Info("dns-01 record written", "step", StepPresent, "zone", unfqdn(zone))
	if err := cp.waitVisible(ctx, zone, name, value); err != nil {
		if rerr := cp.remove(ctx, domain, value); rerr != nil {
			err = fmt.Errorf("%w (removing the record failed too: %v)", err, rerr)
		}
		return cerr(StepPropagation, err)
	}
	log.Info("dns-01 record visible", "step", StepPropagation)
	return nil
}

// CleanUpContext removes the value PresentContext wrote for domain and
// keyAuth, and nothing else.
func (cp *ChallengeProvider) CleanUpContext(ctx context.Context, domain, keyAuth string) error {
	domain = strings.TrimPrefix(unfqdn(domain), "*.")
	_, value := ChallengeRecord(domain, keyAuth)
	if err := cp.remove(ctx, domain, value); err != nil {
		return &ChallengeError{Domain: domain, Step: StepCleanup, Err: err}
	}
	cp.log.Info("dns-01 record removed", "domain", domain, "step", StepCleanup)
	return nil
}

// target returns where the challenge TXT for domain is written: the end of
// the CNAME chain from _acme-challenge.<domain>, or, delegated, the name in
// the delegation zone (after checking the operator's CNAME leads there).
func (cp *ChallengeProvider) target(ctx context.Context, domain string) (name, zone string, err error) {
	base := ChallengeName(domain, "")
	if cp.opts.DelegationZone != "" {
		name = ChallengeName(domain, cp.opts.DelegationZone)
		end, _, err := cp.opts.Resolver.FollowCNAME(ctx, base)
		if err != nil {
			return "", "", err
		}
		if end != name {
			return "", "", &fielderr.Error{Field: "DelegationZone", Value: cp.opts.DelegationZone,
				Problem: fmt.Sprintf("%s does not lead to %s", base, name), Accepted: fmt.Sprintf("a zone reached by %s CNAME %s (create it)", base, name)}
		}
		return name, fqdn(cp.opts.DelegationZone), nil
	}
	name, _, err = cp.opts.Resolver.FollowCNAME(ctx, base)
	if err != nil {
		return "", "", err
	}
	explicit := ""
	if cp.opts.Zone != "" && inZone(name, cp.opts.Zone) {
		explicit = cp.opts.Zone
	}
	zone, err = FindZone(ctx, cp.c, name, explicit, cp.opts.Resolver)
	if err != nil {
		return "", "", err
	}
	return name, zone, nil
}

func (cp *ChallengeProvider) nameLock(name string) *sync.Mutex {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	m := cp.names[name]
	if m == nil {
		m = &sync.Mutex{}
		cp.names[name] = m
	}
	return m
}

// write adds the TXT value at name unless this provider already has, and
// reads the zone back to see it there.
func (cp *ChallengeProvider) write(ctx context.Context, domain, zone, name, value string) error {
	lk := cp.nameLock(name)
	lk.Lock()
	defer lk.Unlock()
	key := presentKey{domain, value}
	cp.mu.Lock()
	if p := cp.present[key]; p != nil {
		p.count++
		cp.mu.Unlock()
		return nil
	}
	cp.mu.Unlock()
	want := Record{Name: name, Type: TypeTXT, Value: value, TTL: TTL}
	exists, err := cp.has(ctx, zone, want)
	if err != nil {
		return err
	}
	ours := false
	if !exists {
		if _, err := cp.c.AppendRecords(ctx, zone, []libdns.Record{want.toLibdns(zone)}); err != nil {
			// A failed call may still have written (a timeout after the
			// API acted): make sure nothing is left.
			cp.undo(ctx, zone, want)
			return err
		}
		ours = true
		ok, err := cp.has(ctx, zone, want)
		if err != nil || !ok {
			cp.undo(ctx, zone, want)
			if err == nil {
				err = fmt.Errorf("%w: %s was accepted but is not in zone %s", ErrReadBack, want, unfqdn(zone))
			}
			return err
		}
	}
	cp.mu.Lock()
	cp.present[key] = &presented{zone: zone, name: name, count: 1, ours: ours}
	cp.mu.Unlock()
	return nil
}

func (cp *ChallengeProvider) has(ctx context.Context, zone string, want Record) (bool, error) {
	recs, err := cp.c.GetRecords(ctx, zone)
	if err != nil {
		return false, err
	}
	for _, r := range recs {
		if fromLibdns(r, zone).same(want) {
			return true, nil
		}
	}
	return false, nil
}

// undo deletes want under a fresh deadline, logging failure: the caller is
// already returning an error.
func (cp *ChallengeProvider) undo(ctx context.Context, zone string, want Record) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cp.c.Timeout())
	defer cancel()
	if _, err := cp.c.DeleteRecords(rctx, zone, []libdns.Record{want.toLibdns(zone)}); err != nil {
		cp.log.Warn("dns-01 record may be left behind", "name", want.Name, "err", err.Error())
	}
}

// remove drops one Present of (domain, value) and deletes the record with the
// last one, if this provider created it.
func (cp *ChallengeProvider) remove(ctx context.Context, domain, value string) error {
	key := presentKey{domain, value}
	cp.mu.Lock()
	p := cp.present[key]
	cp.mu.Unlock()
	if p == nil {
		// Nothing presented (or already cleaned up): nothing of ours to
		// remove.
		return nil
	}
	lk := cp.nameLock(p.name)
	lk.Lock()
	defer lk.Unlock()
	cp.mu.Lock()
	p.count--
	last := p.count <= 0
	if last {
		delete(cp.present, key)
	}
	cp.mu.Unlock()
	if !last || !p.ours {
		return nil
	}
	rec := Record{Name: p.name, Type: TypeTXT, Value: value, TTL: TTL}
	// The deadline is fresh: cleanup also runs after the caller's context
	// has failed.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*cp.c.Timeout())
	defer cancel()
	if _, err := cp.c.DeleteRecords(rctx, p.zone, []libdns.Record{rec.toLibdns(p.zone)}); err != nil {
		return err
	}
	still, err := cp.has(rctx, p.zone, rec)
	if err != nil {
		return err
	}
	if still {
		return fmt.Errorf("%w: %s is still in zone %s after deleting it", ErrReadBack, rec, unfqdn(p.zone))
	}
	return nil
}

// waitVisible polls until every server answers value at name, with growing
// intervals and a deadline.
func (cp *ChallengeProvider) waitVisible(ctx context.Context, zone, name, value string) error {
	ctx, cancel := context.WithTimeout(ctx, cp.opts.PropagationTimeout)
	defer cancel()
	interval := cp.opts.PollInterval
	timer := time.NewTimer(0)
	defer timer.Stop()
	var lastErr error
	for {
		select {
		case <-ctx.Done():
			if lastErr == nil {
				lastErr = ctx.Err()
			}
			return fmt.Errorf("TXT %s not visible within %s: %w", name, cp.opts.PropagationTimeout, lastErr)
		case <-timer.C:
		}
		lastErr = cp.visible(ctx, zone, name, value)
		if lastErr == nil {
			return nil
		}
		cp.log.Debug("dns-01 record not visible yet", "name", name, "step", StepPropagation, "err", lastErr.Error())
		timer.Reset(interval)
		interval = min(interval*3/2, maxPollInterval)
	}
}

// visible returns nil when every server answers value at name.
func (cp *ChallengeProvider) visible(ctx context.Context, zone, name, value string) error {
	servers := cp.opts.CheckServers
	if len(servers) == 0 {
		var err error
		servers, err = cp.opts.Resolver.AuthoritativeServers(ctx, zone)
		if err != nil {
			return err
		}
	}
	var missing []string
	for _, s := range servers {
		// Authoritative servers get no recursion bit; configured servers
		// may be recursive resolvers.
		m, err := dnsread.QueryServer(ctx, s, name, dns.TypeTXT, len(cp.opts.CheckServers) > 0, cp.opts.Resolver.QueryTimeout())
		if err != nil {
			missing = append(missing, err.Error())
			continue
		}
		found := false
		for _, rr := range m.Answer {
			if t, ok := rr.(*dns.TXT); ok && fqdn(t.Hdr.Name) == fqdn(name) && strings.Join(t.Txt, "") == value {
				found = true
			}
		}
		if !found {
			missing = append(missing, fmt.Sprintf("%s answers %s without the value", s, dns.RcodeToString[m.Rcode]))
		}
	}
	if len(missing) > 0 {
		return errors.New(strings.Join(missing, "; "))
	}
	return nil
}
