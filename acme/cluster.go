package acme

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/go-acme/lego/v4/challenge"

	"github.com/tee-ingress/tee-ingress/internal/wait"
)

// Replicas. With Config.Shared set, the instances of one app elect one
// issuer per domain set through the store's lock; it orders and writes the
// certificate under the lock (fenced), and the others install it from the
// store's watch. tls-alpn-01 challenges go through the store too, so any
// replica the CA reaches answers. Every certificate any replica obtained is
// appended to a shared history, unfenced, because the CT log shows it
// whoever was elected.
const (
	// lockWait bounds the wait for another replica's order to finish.
	lockWait = 3 * time.Minute
	// ackWait bounds the wait for every replica to confirm it answers a
	// tls-alpn-01 challenge; after it the CA is asked anyway.
	ackWait = 10 * time.Second
	// storeCallTimeout bounds cleanup writes made after ctx ended.
	storeCallTimeout = 5 * time.Second
	historyKey       = "history"
	// historyEvery is how often a replica checks that the shared history
	// holds what it issued and serves.
	historyEvery = time.Minute
)

func certKey(domains []string) string { return "certs/" + setFileName(domains) }

// obtainSharedLocked orders only as the elected issuer of domains; a
// replica that gets the lock after another issued installs that one.
func (m *Manager) obtainSharedLocked(ctx context.Context, domains []string, replacing *Certificate) (*Certificate, error) {
	if c := m.adoptShared(ctx, domains, replacing, false); c != nil {
		return c, nil // no need to wait for the lock
	}
	lctx, cancel := context.WithTimeout(ctx, lockWait)
	lock, err := m.cfg.Shared.Lock(lctx, setFileName(domains))
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !m.mayIssueAlone(replacing) {
			return nil, fmt.Errorf("acme: %s: no replica could be elected to order (shared store unreachable, or another replica held the lock past %s); the current certificate stays in use: %w", domains[0], lockWait, err)
		}
		m.log.Error("ISSUING WITHOUT THE OTHER REPLICAS: the shared store is unreachable and the certificate has less than a sixth of its lifetime left; another replica may do the same; the certificate joins the shared history when the store returns",
			"domain", domains[0], "not_after", replacing.Leaf.NotAfter, "err", err)
		c, _, err := m.orderLocked(ctx, domains, replacing)
		return c, err
	}
	m.log.Info("elected to order: this replica holds the issuer lock", "domain", domains[0])
	m.updateStatus(domains, func(s *Status) { s.Leader = true })
	defer func() {
		m.updateStatus(domains, func(s *Status) { s.Leader = false })
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeCallTimeout)
		lock.Unlock(uctx)
		cancel()
	}()
	if c := m.adoptShared(ctx, domains, replacing, false); c != nil {
		return c, nil // another replica issued while this one waited
	}
	m.mu.Lock()
	m.held = lock
	m.mu.Unlock()
	c, data, err := m.orderLocked(ctx, domains, replacing)
	m.mu.Lock()
	m.held = nil
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	m.syncHistory(ctx)
	switch err := lock.Put(ctx, certKey(domains), data); {
	case errors.Is(err, ErrFenced):
		m.log.Warn("the issuer lock lapsed during the order (this replica was paused or cut off past its lease): the successor's certificate is installed; this one is only recorded in the shared history",
			"domain", domains[0], "serial", c.Leaf.SerialNumber.Text(16))
		if s := m.adoptShared(ctx, domains, nil, true); s != nil {
			return s, nil
		}
	case err != nil:
		m.log.Error("the new certificate could not be written to the shared store; the other replicas keep theirs until it is", "domain", domains[0], "err", err)
	}
	return c, nil
}

// mayIssueAlone: the store cannot elect an issuer, and waiting longer
// risks serving an expired certificate.
func (m *Manager) mayIssueAlone(cur *Certificate) bool {
	if cur == nil {
		return false
	}
	life := cur.Leaf.NotAfter.Sub(cur.Leaf.NotBefore)
	return m.now().After(cur.Leaf.NotAfter.Add(-life / 6))
}

// adoptShared installs the store's certificate for domains when it is
// valid, newer than replacing, and not yet due (force: whatever its age,
// as long as it is valid). It returns it, or nil.
func (m *Manager) adoptShared(ctx context.Context, domains []string, replacing *Certificate, force bool) *Certificate {
	data, _, err := m.cfg.Shared.Get(ctx, certKey(domains))
	if err != nil {
		if !errors.Is(err, ErrNotFound) {
			m.log.Warn("cannot read the shared certificate", "domain", domains[0], "err", err)
		}
		return nil
	}
	c, err := m.parseStored(domains, data)
	if err != nil || !m.now().Before(c.Leaf.NotAfter) {
		return nil
	}
	if !force {
		if replacing != nil && !c.Leaf.NotBefore.After(replacing.Leaf.NotBefore) {
			return nil
		}
		if d, _ := m.decideLocked(ctx, c); d.Due(m.now()) {
			return nil
		}
	}
	m.install(domains, c, data, force)
	return c
}

// install makes c, read from the shared store, the certificate of domains
// unless a newer one is held (force: regardless), stores it locally so a
// restart with the store down serves it, and reports it.
func (m *Manager) install(domains []string, c *Certificate, data []byte, force bool) bool {
	m.mu.Lock()
	cur := m.certs[setFileName(domains)]
	if cur != nil && (cur.Leaf.Equal(c.Leaf) || !force && !c.Leaf.NotBefore.After(cur.Leaf.NotBefore)) {
		m.mu.Unlock()
		return false
	}
	m.mu.Unlock()
	if err := m.store(domains, data); err != nil {
		m.log.Error("storing the shared certificate locally failed; it is served from memory", "domain", domains[0], "err", err)
	}
	m.put(domains, c, false)
	m.log.Info("installed the certificate another replica obtained", "domain", domains[0],
		"serial", c.Leaf.SerialNumber.Text(16), "not_after", c.Leaf.NotAfter)
	if m.cfg.OnChange != nil {
		m.cfg.OnChange(c)
	}
	return true
}

// follow keeps this replica in step with the store until ctx ends:
// certificates, challenges to answer and the history. Watches that end
// early (the store restarted) are opened again, with a full read.
func (m *Manager) follow(ctx context.Context, sets [][]string) {
	backoff := time.Second
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(ctx)
		certs := m.cfg.Shared.Watch(wctx, "certs/")
		chals := m.cfg.Shared.Watch(wctx, "challenges/")
		hist := m.cfg.Shared.Watch(wctx, historyKey)
		m.resync(ctx, sets)
		tick := time.NewTicker(historyEvery)
		for open := true; open; {
			var e StoreEvent
			select {
			case <-tick.C:
				// A certificate issued while the store was down, or
				// by a replica that lost the lock, gets in here.
				m.syncHistory(ctx)
			case e, open = <-certs:
				if open {
					m.onSharedCert(sets, e)
				}
			case e, open = <-chals:
				if open {
					m.onChallenge(ctx, e)
				}
			case e, open = <-hist:
				if open && !e.Deleted {
					m.setSharedHistory(e.Data)
				}
			}
		}
		tick.Stop()
		cancel()
		if !wait.Sleep(ctx, backoff) {
			return
		}
		backoff = min(backoff*2, time.Minute)
	}
}

// resync reads what the watches may have missed.
func (m *Manager) resync(ctx context.Context, sets [][]string) {
	for _, domains := range sets {
		if data, _, err := m.cfg.Shared.Get(ctx, certKey(domains)); err == nil {
			m.onSharedCert(sets, StoreEvent{Key: certKey(domains), Data: data})
		}
	}
	if data, _, err := m.cfg.Shared.Get(ctx, historyKey); err == nil {
		m.setSharedHistory(data)
	}
	m.syncHistory(ctx)
}

func (m *Manager) onSharedCert(sets [][]string, e StoreEvent) {
	if e.Deleted {
		return // the store's copy is gone; ours stays in use
	}
	for _, domains := range sets {
		if certKey(domains) != e.Key {
			continue
		}
		c, err := m.parseStored(domains, e.Data)
		if err != nil {
			m.log.Warn("ignoring the shared certificate", "domain", domains[0], "err", err)
			return
		}
		if m.now().Before(c.Leaf.NotAfter) {
			m.install(domains, c, e.Data, false)
		}
	}
}

// onChallenge answers a tls-alpn-01 challenge the issuer shared, and says
// so, so that the issuer asks the CA only once every replica answers.
func (m *Manager) onChallenge(ctx context.Context, e StoreEvent) {
	domain := strings.TrimPrefix(e.Key, "challenges/")
	if e.Deleted {
		m.local.CleanUp(domain, "", "")
		return
	}
	keyAuth := string(e.Data)
	if err := m.local.Present(domain, "", keyAuth); err != nil {
		m.log.Error("cannot answer the shared tls-alpn-01 challenge", "domain", domain, "err", err)
		return
	}
	if err := m.cfg.Shared.CompareAndSwap(ctx, ackKey(domain, m.cfg.Shared.Self()), ackValue(keyAuth), AnyVersion); err != nil {
		m.log.Warn("cannot confirm the shared challenge to the issuer", "domain", domain, "err", err)
	}
}

func ackKey(domain, self string) string { return "acks/" + domain + "/" + self }

func ackValue(keyAuth string) []byte {
	sum := sha256.Sum256([]byte(keyAuth))
	return []byte(hex.EncodeToString(sum[:]))
}

// sharedSolver presents a tls-alpn-01 challenge on every replica: locally,
// and through the store to the others, waiting until each confirms.
type sharedSolver struct{ m *Manager }

var _ challenge.Provider = (*sharedSolver)(nil)

func (s *sharedSolver) Present(domain, token, keyAuth string) error {
	m := s.m
	if err := m.local.Present(domain, token, keyAuth); err != nil {
		return err
	}
	m.mu.Lock()
	lock := m.held
	m.mu.Unlock()
	if lock == nil {
		return nil // issuing alone
	}
	ctx, cancel := context.WithTimeout(context.Background(), ackWait)
	defer cancel()
	acks := m.cfg.Shared.Watch(ctx, "acks/"+domain+"/")
	if err := lock.Put(ctx, "challenges/"+domain, []byte(keyAuth)); err != nil {
		return fmt.Errorf("sharing the tls-alpn-01 challenge for %s with the other replicas: %w", domain, err)
	}
	members, err := m.cfg.Shared.Members(ctx)
	if err != nil {
		m.log.Warn("cannot list the replicas; asking the CA without their confirmation", "domain", domain, "err", err)
		return nil
	}
	want := ackValue(keyAuth)
	missing := map[string]bool{}
	for _, id := range members {
		if id == m.cfg.Shared.Self() {
			continue
		}
		if v, _, err := m.cfg.Shared.Get(ctx, ackKey(domain, id)); err != nil || string(v) != string(want) {
			missing[id] = true
		}
	}
	for len(missing) > 0 {
		select {
		case e, ok := <-acks:
			if ok && string(e.Data) == string(want) {
				delete(missing, path.Base(e.Key))
			}
		case <-ctx.Done():
			m.log.Warn("replicas did not confirm the tls-alpn-01 challenge in time; asking the CA anyway", "domain", domain,
				"missing", strings.Join(slices.Sorted(maps.Keys(missing)), ","))
			return nil
		}
	}
	return nil
}

func (s *sharedSolver) CleanUp(domain, token, keyAuth string) error {
	m := s.m
	m.mu.Lock()
	lock := m.held
	m.mu.Unlock()
	if lock != nil {
		ctx, cancel := context.WithTimeout(context.Background(), storeCallTimeout)
		if err := lock.Delete(ctx, "challenges/"+domain); err != nil {
			m.log.Warn("cannot withdraw the shared challenge", "domain", domain, "err", err)
		}
		cancel()
	}
	return m.local.CleanUp(domain, token, keyAuth)
}

// sharedHistory is the stored form of the shared history: leaf
// certificates, DER.
type sharedHistory struct {
	Leaves [][]byte `json:"leaves"`
}

func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

func (m *Manager) setSharedHistory(data []byte) {
	var h sharedHistory
	if err := json.Unmarshal(data, &h); err != nil {
		m.log.Warn("ignoring an unreadable shared history", "err", err)
		return
	}
	var leaves []*x509.Certificate
	for _, der := range h.Leaves {
		if c, err := x509.ParseCertificate(der); err == nil {
			leaves = append(leaves, c)
		}
	}
	m.mu.Lock()
	changed := len(leaves) != len(m.history)
	m.history = leaves
	m.mu.Unlock()
	if changed {
		m.emit(Event{Kind: EventHistory})
	}
}

// SharedHistory is every certificate any replica of this app recorded in
// the shared store, as last read. Nil without a shared store.
func (m *Manager) SharedHistory() []*x509.Certificate {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.history)
}

// noteIssued remembers a certificate this instance obtained, for the
// shared history (appended now or when the store is back).
func (m *Manager) noteIssued(c *Certificate) {
	m.mu.Lock()
	m.issued = append(m.issued, c.Leaf)
	m.mu.Unlock()
}

// syncHistory appends to the shared history what this instance issued or
// serves and it lacks. Appends race with other replicas' (compare and
// swap, retried) but are not fenced: a certificate obtained by a replica
// that lost the lock is public in CT all the same.
func (m *Manager) syncHistory(ctx context.Context) {
	m.mu.Lock()
	// The last history read is kept too: if the store's copy was
	// replaced by one that does not open, it is rebuilt, not emptied.
	mine := slices.Concat(m.issued, m.history)
	for _, c := range m.certs {
		mine = append(mine, c.Leaf)
	}
	m.mu.Unlock()
	for range 10 {
		data, ver, err := m.cfg.Shared.Get(ctx, historyKey)
		var h sharedHistory
		switch {
		case errors.Is(err, ErrNotFound), errors.Is(err, ErrRejected):
			ver = AnyVersion // start again over what is missing or forged
			if errors.Is(err, ErrNotFound) {
				ver = 0
			}
		case err != nil:
			m.log.Warn("shared history not updated; retried later", "err", err)
			return
		default:
			if err := json.Unmarshal(data, &h); err != nil {
				ver = AnyVersion
			}
		}
		have := map[string]bool{}
		for _, der := range h.Leaves {
			have[fingerprint(der)] = true
		}
		added := false
		for _, c := range mine {
			if fp := fingerprint(c.Raw); !have[fp] {
				have[fp] = true
				h.Leaves = append(h.Leaves, c.Raw)
				added = true
			}
		}
		if !added {
			return
		}
		next, _ := json.Marshal(&h)
		err = m.cfg.Shared.CompareAndSwap(ctx, historyKey, next, ver)
		if err == nil {
			m.setSharedHistory(next)
			return
		}
		if !errors.Is(err, ErrConflict) {
			m.log.Warn("shared history not updated; retried later", "err", err)
			return
		}
	}
}
