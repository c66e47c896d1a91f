package dnssetup

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/tee-ingress/tee-ingress/dnsread"
	"github.com/tee-ingress/tee-ingress/internal/fielderr"
)

// Resolver is one resolver the records must be visible on.
type Resolver struct {
	Name string // as the operator configured it, for messages
	R    *dnsread.Resolver
}

// Waiter waits until records are visible on every resolver.
type Waiter struct {
	Resolvers []Resolver // required
	// Permission, when set, is checked for each of Domains on every
	// resolver: a CAA set refusing it is a Refused error.
	Permission *dnsread.CAAPolicy
	Domains    []string
	// Interval between checks (zero: 15 s), Timeout for the whole wait
	// (zero: 30 min), as DNS_SETUP_INTERVAL and DNS_SETUP_TIMEOUT.
	Interval, Timeout time.Duration
	Logger            *slog.Logger // nil discards
}

// Refused is a CAA set that does not let this account issue.
type Refused struct{ Why string }

func (e *Refused) Error() string { return e.Why }

// Missing says which records were still not visible when the wait ended.
type Missing struct {
	Records []Result
	After   time.Duration
}

func (e *Missing) Error() string {
	var parts []string
	for _, r := range e.Records {
		parts = append(parts, r.Record.String()+": "+r.Why)
	}
	return fmt.Sprintf("DNS records not visible after %s (create them, or set DNS_SETUP_MODE=print to go on without checking): %s",
		e.After.Round(time.Second), strings.Join(parts, "; "))
}

// Result is one record's state on the last check.
type Result struct {
	Record Record
	OK     bool
	Why    string // what each resolver still lacks or answers
}

// Wait checks every Interval until all records are visible on every
// resolver, logging at each check what is still missing where, and
// returns nil, a *Refused, a *Missing after Timeout, or ctx's error.
func (w *Waiter) Wait(ctx context.Context, records []Record) error {
	log := w.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	interval, timeout := w.Interval, w.Timeout
	if interval <= 0 {
		interval = 15 * time.Second
	}
	if timeout <= 0 {
		timeout = 30 * time.Minute
	}
	start := time.Now()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for attempt := 1; ; attempt++ {
		results, err := w.Check(ctx, records)
		if err != nil {
			return err
		}
		var missing []Result
		for _, r := range results {
			if !r.OK {
				missing = append(missing, r)
				log.Info("DNS record not visible yet", "check", attempt, "record", r.Record.String(), "why", r.Why)
			}
		}
		if len(missing) == 0 {
			log.Info("every DNS record is visible", "records", len(records), "checks", attempt, "took", time.Since(start).Round(time.Second))
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return &Missing{Records: missing, After: time.Since(start)}
		case <-tick.C:
		}
	}
}

// Check looks at every record on every resolver once.
func (w *Waiter) Check(ctx context.Context, records []Record) ([]Result, error) {
	if len(w.Resolvers) == 0 {
		return nil, &fielderr.Error{Field: "Resolvers", Problem: "no resolvers to check with", Accepted: "DoH URLs or DNS servers"}
	}
	if w.Permission != nil {
		for _, d := range w.Domains {
			for _, res := range w.Resolvers {
				set, err := res.R.LookupCAA(ctx, d)
				if err != nil {
					continue // an unanswered CAA query is retried at the next check
				}
				if ok, why := dnsread.PermitsCAA(set, *w.Permission); !ok {
					return nil, &Refused{Why: fmt.Sprintf("%s (seen through %s): issuance would fail; fix or remove that CAA record", why, res.Name)}
				}
			}
		}
	}
	out := make([]Result, 0, len(records))
	for _, rec := range records {
		var lacking []string
		for _, res := range w.Resolvers {
			if ok, saw := visible(ctx, res.R, rec); !ok {
				lacking = append(lacking, res.Name+" "+saw)
			}
		}
		out = append(out, Result{Record: rec, OK: len(lacking) == 0, Why: strings.Join(lacking, "; ")})
	}
	return out, nil
}

// visible says whether r shows rec, else what it answers.
func visible(ctx context.Context, r *dnsread.Resolver, rec Record) (bool, string) {
	switch rec.Type {
	case "TXT":
		txts, err := r.LookupTXT(ctx, rec.Name)
		if err != nil {
			return false, "failed: " + err.Error()
		}
		if slices.Contains(txts, rec.Value) {
			return true, ""
		}
		return false, fmt.Sprintf("answers TXT %q", txts)
	case "CNAME":
		return visibleCNAME(ctx, r, rec)
	case "CAA":
		set, err := r.LookupCAA(ctx, rec.Name)
		if err != nil {
			return false, "failed: " + err.Error()
		}
		var have []string
		for _, c := range set.Records {
			if dnsread.FQDN(set.Owner) == dnsread.FQDN(rec.Name) && fmt.Sprintf("%d %s %q", c.Flags, c.Tag, c.Value) == rec.Value {
				return true, ""
			}
			have = append(have, c.String())
		}
		return false, fmt.Sprintf("answers CAA %q at %s", have, set.Owner)
	}
	return false, "record type " + rec.Type + " is not checked"
}

func visibleCNAME(ctx context.Context, r *dnsread.Resolver, rec Record) (bool, string) {
	want := dnsread.FQDN(strings.ToLower(rec.Value))
	m, err := r.Query(ctx, rec.Name, dns.TypeCNAME)
	if err != nil {
		return false, "failed: " + err.Error()
	}
	var got []string
	for _, rr := range m.Answer {
		if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, dnsread.FQDN(rec.Name)) {
			if strings.EqualFold(c.Target, want) {
				return true, ""
			}
			got = append(got, c.Target)
		}
	}
	if len(got) > 0 || rec.Exact {
		return false, fmt.Sprintf("answers CNAME %q", got)
	}
	// A CNAME flattened at a zone apex: the name has the gateway's address.
	own, gw := addrs(ctx, r, rec.Name), addrs(ctx, r, want)
	for _, a := range own {
		if slices.Contains(gw, a) {
			return true, ""
		}
	}
	return false, fmt.Sprintf("answers no CNAME, addresses %q (the gateway has %q)", own, gw)
}

func addrs(ctx context.Context, r *dnsread.Resolver, name string) []string {
	var out []string
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		m, err := r.Query(ctx, name, t)
		if err != nil {
			continue
		}
		for _, rr := range m.Answer {
			switch a := rr.(type) {
			case *dns.A:
				out = append(out, a.A.String())
			case *dns.AAAA:
				out = append(out, a.AAAA.String())
			}
		}
	}
	return out
}
