package acme

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/go-acme/lego/v4/acme/api"
	"github.com/go-acme/lego/v4/certificate"
)

// Why a certificate is due, for logs and tests.
const (
	ReasonARI         = "ari"
	ReasonFixedWindow = "renew-before"
	ReasonLifetime    = "third-of-lifetime"
)

// Decision is when a certificate should be renewed and why.
type Decision struct {
	At     time.Time // renew at or after this time
	Reason string    // one of the Reason constants
	// Recheck is when to ask again even if At is later (ARI windows move).
	Recheck time.Time
}

// Due reports whether the decision says renew now.
func (d Decision) Due(now time.Time) bool { return !now.Before(d.At) }

// Decide computes when c should be renewed: the fixed RenewBefore window when
// configured, else the CA's ARI window when the CA offers ARI, else when a third
// of the lifetime is left. An ARI failure falls back to the lifetime rule.
func (m *Manager) Decide(ctx context.Context, c *Certificate) (Decision, error) {
	m.op.Lock()
	defer m.op.Unlock()
	return m.decideLocked(ctx, c)
}

func (m *Manager) decideLocked(ctx context.Context, c *Certificate) (Decision, error) {
	now := m.now()
	recheck := now.Add(m.cfg.RecheckInterval)
	if m.cfg.RenewBefore > 0 {
		return Decision{At: c.Leaf.NotAfter.Add(-m.cfg.RenewBefore), Reason: ReasonFixedWindow, Recheck: recheck}, nil
	}
	lifetime := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)
	third := Decision{At: c.Leaf.NotAfter.Add(-lifetime / 3), Reason: ReasonLifetime, Recheck: recheck}
	if err := m.setupLocked(ctx); err != nil {
		return third, err
	}
	if m.dir.RenewalInfo == "" {
		return third, nil
	}
	info, err := m.client.Certificate.GetRenewalInfo(certificate.RenewalInfoRequest{Cert: c.Leaf})
	if errors.Is(err, api.ErrNoARI) {
		return third, nil
	}
	if err != nil {
		m.log.Warn("ARI lookup failed, using a third of the lifetime", "domain", c.Domains[0], "error", err)
		return third, nil
	}
	if info.RetryAfter > 0 && now.Add(info.RetryAfter).Before(recheck) {
		recheck = now.Add(info.RetryAfter)
	}
	at := info.ShouldRenewAt(now, m.cfg.RecheckInterval)
	if at == nil {
		// The window starts after the next recheck; ask again then.
		return Decision{At: info.SuggestedWindow.Start, Reason: ReasonARI, Recheck: recheck}, nil
	}
	return Decision{At: *at, Reason: ReasonARI, Recheck: recheck}, nil
}

// RenewIfDue renews the certificate of domains when its Decision says so,
// sending ARI's replaces field when the CA offers ARI. The current
// certificate keeps being served whatever happens. It returns the
// certificate now held, whether it is new, and when to look again.
func (m *Manager) RenewIfDue(ctx context.Context, domains []string) (c *Certificate, renewed bool, next time.Time, err error) {
	m.op.Lock()
	defer m.op.Unlock()
	cur := m.Current(domains)
	if cur == nil {
		return nil, false, time.Time{}, fmt.Errorf("acme: %s: no certificate held; call Ensure first", domains[0])
	}
	d, err := m.decideLocked(ctx, cur)
	if err != nil {
		return cur, false, time.Time{}, err
	}
	now := m.now()
	if !d.Due(now) {
		next := d.At
		if d.Recheck.Before(next) {
			next = d.Recheck
		}
		m.updateStatus(domains, func(s *Status) { s.NextCheck = next })
		return cur, false, next, nil
	}
	m.log.Info("renewing certificate", "domain", domains[0], "reason", d.Reason, "not_after", cur.Leaf.NotAfter)
	c, err = m.obtainLocked(ctx, domains, cur)
	if err != nil {
		return cur, false, time.Time{}, err
	}
	return c, true, now.Add(time.Minute), nil
}

// backoff is the wait after the n-th consecutive failure (n >= 1): doubling
// from Initial, capped at Max, with jitter in [d/2, d] so that instances of
// one app sharing an account do not retry in step; never shorter than what
// the CA asked for.
func (m *Manager) backoff(n int, retryAfter time.Duration) time.Duration {
	d := m.cfg.Backoff.Initial
	for i := 1; i < n && d < m.cfg.Backoff.Max; i++ {
		d *= 2
	}
	d = min(d, m.cfg.Backoff.Max)
	d = d/2 + rand.N(d/2+1)
	return max(d, retryAfter)
}

// Run keeps the certificates of every domain set current until ctx ends:
// it obtains what is missing and renews what is due, backing off on failure.
// Each set is handled on its own, so one failing domain does not hold up the
// others. Run returns when ctx is done and all its goroutines have exited.
func (m *Manager) Run(ctx context.Context, sets [][]string) {
	var wg sync.WaitGroup
	if m.cfg.Shared != nil {
		wg.Go(func() { m.follow(ctx, sets) })
	}
	for _, domains := range sets {
		wg.Go(func() { m.runSet(ctx, domains) })
	}
	wg.Wait()
}

// storeRetry and storeRetryMax bound how often the write of a certificate
// held only in memory is retried (it doubles from the first to the second).
const (
	storeRetry    = 5 * time.Second
	storeRetryMax = 5 * time.Minute
)

func (m *Manager) runSet(ctx context.Context, domains []string) {
	failures, storeFails := 0, 0
	for {
		var next time.Time
		var err error
		if m.Current(domains) == nil {
			_, err = m.Ensure(ctx, domains)
			next = m.now().Add(min(time.Minute, m.cfg.RecheckInterval))
		} else {
			_, _, next, err = m.RenewIfDue(ctx, domains)
		}
		if err != nil {
			failures++
			var retryAfter time.Duration
			var oe *ObtainError
			if errors.As(err, &oe) {
				retryAfter = oe.RetryAfter(m.now())
			}
			wait := m.backoff(failures, retryAfter)
			next = m.now().Add(wait)
			m.updateStatus(domains, func(st *Status) {
				st.Failures, st.LastError, st.RateLimited, st.NextCheck = failures, err.Error(), IsRateLimited(err), next
				st.FailedTotal++
			})
			m.log.Error("certificate attempt failed; current certificate stays in use", "domain", domains[0],
				"failures", failures, "retry_in", wait.Round(time.Second), "error", err)
		} else {
			failures = 0
			m.updateStatus(domains, func(st *Status) {
				st.Failures, st.LastError, st.RateLimited, st.NextCheck = 0, "", false, next
			})
		}
		if m.flushUnsaved(domains) {
			// Held only in memory: retry the write soon, whatever the
			// renewal schedule says, less often the longer it fails.
			storeFails++
			wait := min(storeRetry<<min(storeFails-1, 6), storeRetryMax)
			if soon := m.now().Add(wait); soon.Before(next) {
				next = soon
			}
		} else {
			storeFails = 0
		}
		t := time.NewTimer(max(next.Sub(m.now()), 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
