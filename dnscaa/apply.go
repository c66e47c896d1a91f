package dnscaa

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/libdns/libdns"

	"github.com/tee-ingress/tee-ingress/dnsread"
	"github.com/tee-ingress/tee-ingress/internal/fielderr"
)

// ApplyOptions configure Preview and Apply.
type ApplyOptions struct {
	// Zone is DNS_ZONE: the zone that holds the records. Empty: found per
	// name with FindZone (in delegation mode, the delegation zone).
	Zone string
	// Resolver is used to find zones through DNS when the provider cannot
	// list them. nil: the system's resolvers.
	Resolver *dnsread.Resolver
	// Logger gets one line per change. nil: discard.
	Logger *slog.Logger
	// RollbackTimeout bounds undoing a partly applied plan after a failure.
	// Zero: one provider call timeout per record.
	RollbackTimeout time.Duration
}

// Change actions.
const (
	ActionCreate = "create"
	ActionDelete = "delete"
	ActionKeep   = "keep"
)

// Change is one step of bringing a zone to a plan.
type Change struct {
	// Action is ActionCreate, ActionDelete or ActionKeep (already right).
	Action string `json:"action"`
	Zone   string `json:"zone"`
	Record Record `json:"record"`
	// Why says which planned record the change serves.
	Why string `json:"why"`
	// first: a delete that must precede the creates (a record that
	// cannot coexist with the new CNAME).
	first bool
}

func (c Change) String() string {
	return fmt.Sprintf("%s %s (%s)", c.Action, c.Record, c.Why)
}

// ErrReadBack is wrapped when the zone, read after writing, does not hold
// what the plan says.
var ErrReadBack = errors.New("records read back differ from the plan")

// Preview reads the zones the plan touches and returns the changes Apply would
// make, keeps included. It writes nothing.
func Preview(ctx context.Context, p Provider, plan *Plan, opts ApplyOptions) ([]Change, error) {
	zs, err := diff(ctx, asClient(p, opts.Logger), plan, opts)
	if err != nil {
		return nil, err
	}
	var out []Change
	for _, z := range zs {
		out = append(out, z.changes...)
	}
	return out, nil
}

// Apply brings the provider's zones to the plan and returns every change,
// keeps included. Everything is computed and checked before the first write;
// a plan already in place makes no write at all. New TXT and CAA records are
// added before the ones they replace are deleted, so the name is never
// without a record; a conflicting A/AAAA/CNAME is deleted before the gateway
// CNAME is added, since the two cannot coexist. Records the plan does not own
// are never touched. Afterwards the zones are read back and must match. On a
// failure, what this call created is deleted and what it deleted is put
// back, and the error says so.
func Apply(ctx context.Context, p Provider, plan *Plan, opts ApplyOptions) ([]Change, error) {
	c := asClient(p, opts.Logger)
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	zs, err := diff(ctx, c, plan, opts)
	if err != nil {
		return nil, err
	}
	var done []Change
	var all []Change
	fail := func(err error) ([]Change, error) {
		return all, rollback(ctx, c, done, opts, log, err)
	}
	for _, z := range zs {
		all = append(all, z.changes...)
		order := orderChanges(z.changes)
		for _, ch := range order {
			var err error
			if ch.Action == ActionCreate {
				_, err = c.AppendRecords(ctx, z.zone, []libdns.Record{ch.Record.toLibdns(z.zone)})
			} else {
				_, err = c.DeleteRecords(ctx, z.zone, []libdns.Record{ch.Record.deletable(z.zone)})
			}
			if err != nil {
				return fail(fmt.Errorf("%s %s: %w", ch.Action, ch.Record, err))
			}
			done = append(done, ch)
			log.Info("dns record "+ch.Action+"d", "zone", unfqdn(z.zone), "name", ch.Record.Name, "type", ch.Record.Type, "value", ch.Record.Value, "why", ch.Why)
		}
		if len(order) == 0 {
			continue
		}
		if err := readBack(ctx, c, z); err != nil {
			return fail(err)
		}
	}
	return all, nil
}

// orderChanges puts the changes of one zone in the order they are made:
// creates that conflict with nothing, so that a provider refusing writes
// fails before anything was deleted; then deletes of records that cannot
// coexist with a new CNAME, directly followed by the CNAME; last the deletes
// of replaced records, once their replacements exist.
func orderChanges(changes []Change) []Change {
	blocked := map[string]bool{}
	for _, ch := range changes {
		if ch.Action == ActionDelete && ch.first {
			blocked[ch.Record.Name] = true
		}
	}
	var order []Change
	for _, ch := range changes {
		if ch.Action == ActionCreate && !blocked[ch.Record.Name] {
			order = append(order, ch)
		}
	}
	for _, ch := range changes {
		if ch.Action == ActionDelete && ch.first {
			order = append(order, ch)
		}
	}
	for _, ch := range changes {
		if ch.Action == ActionCreate && blocked[ch.Record.Name] {
			order = append(order, ch)
		}
	}
	for _, ch := range changes {
		if ch.Action == ActionDelete && !ch.first {
			order = append(order, ch)
		}
	}
	return order
}

// zoneDiff is the changes for one zone.
type zoneDiff struct {
	zone    string
	changes []Change
}

func diff(ctx context.Context, c *Client, plan *Plan, opts ApplyOptions) ([]zoneDiff, error) {
	if plan == nil {
		return nil, errors.New("no plan")
	}
	// Group the planned records by zone.
	explicit := opts.Zone
	if plan.delegation != "" {
		explicit = plan.delegation
	}
	var zones []string
	byZone := map[string][]planned{}
	finder := &zoneFinder{p: c, r: opts.Resolver}
	for _, r := range plan.records {
		z, err := finder.find(ctx, r.Name, explicit)
		if err != nil {
			return nil, fmt.Errorf("finding the zone for %s (%s): %w", r.Name, r.domain, err)
		}
		if _, ok := byZone[z]; !ok {
			zones = append(zones, z)
		}
		byZone[z] = append(byZone[z], r)
	}
	var out []zoneDiff
	for _, z := range zones {
		recs, err := c.GetRecords(ctx, z)
		if err != nil {
			return nil, fmt.Errorf("reading zone %s: %w", unfqdn(z), err)
		}
		existing := make([]Record, 0, len(recs))
		for _, r := range recs {
			existing = append(existing, fromLibdns(r, z))
		}
		changes, err := zoneChanges(z, byZone[z], existing, c.CNAMESiblings())
		if err != nil {
			return nil, err
		}
		out = append(out, zoneDiff{zone: z, changes: changes})
	}
	return out, nil
}

func zoneChanges(zone string, want []planned, existing []Record, siblings bool) ([]Change, error) {
	var changes []Change
	deleting := map[int]bool{}
	del := func(i int, why string, first bool) {
		if !deleting[i] {
			deleting[i] = true
			changes = append(changes, Change{Action: ActionDelete, Zone: zone, Record: existing[i], Why: why, first: first})
		}
	}
	aliasAt := map[string]bool{}
	for _, w := range want {
		if w.kind == kindAlias {
			aliasAt[w.Name] = true
		}
	}
	for _, w := range want {
		have := false
		for i, e := range existing {
			if e.Name != w.Name {
				continue
			}
			if e.same(w.Record) {
				// A duplicate stays: providers that delete by content
				// would remove both copies.
				have = true
				continue
			}
			switch w.kind {
			case kindAlias:
				switch e.Type {
				case "A", "AAAA", TypeCNAME:
					del(i, fmt.Sprintf("conflicts with the %s of %s", w.kind, w.domain), true)
				case TypeCAA:
					if !siblings {
						return nil, fmt.Errorf("cannot create the gateway CNAME for %s at %s: it holds CAA records, and this DNS provider does not keep other records beside a CNAME", w.domain, w.Name)
					}
				default:
					return nil, fmt.Errorf("cannot create the gateway CNAME for %s at %s: it also holds %s records, and a CNAME must be alone at its name (remove them, or set no gateway domain and route the name yourself)", w.domain, w.Name, e.Type)
				}
			case kindRouting:
				if e.Type == TypeTXT {
					del(i, "replaced by the "+w.kind.String()+" of "+w.domain, false)
				}
			case kindCAA:
				if e.Type == TypeCAA && e.Tag == w.Tag {
					del(i, "replaced by the "+w.kind.String()+" of "+w.domain, false)
				}
			case kindPersist:
				if e.Type == TypeTXT && sameIssuer(e.Value, w.Value) {
					del(i, "replaced by the "+w.kind.String()+" of "+w.domain, false)
				}
			}
			if e.Type == TypeCNAME && w.kind != kindAlias && !aliasAt[w.Name] && !(siblings && w.kind == kindCAA) {
				return nil, fmt.Errorf("cannot create the %s record for %s at %s: it is a CNAME to %s, and a CNAME must be alone at its name", w.Type, w.domain, w.Name, e.Value)
			}
		}
		if w.kind == kindAlias && fqdn(w.Name) == fqdn(zone) {
			return nil, &fielderr.Error{Field: "GatewayDomain", Problem: fmt.Sprintf("cannot create the gateway CNAME for %s: %s is the apex of zone %s, where SOA and NS records live", w.domain, w.Name, unfqdn(zone)),
				Accepted: "a name below the apex, or no gateway domain"}
		}
		if w.kind == kindCAA && aliasAt[w.Name] && !siblings {
			return nil, &fielderr.Error{Field: "CAA", Problem: fmt.Sprintf("cannot pin CAA for %s at %s: the gateway CNAME is there too, and this DNS provider does not keep a CAA record beside a CNAME (Cloudflare does)", w.domain, w.Name),
				Accepted: "no CAA, a wildcard name, or a delegation zone on Cloudflare"}
		}
		if have {
			changes = append(changes, Change{Action: ActionKeep, Zone: zone, Record: w.Record, Why: w.kind.String() + " of " + w.domain})
			continue
		}
		rec := w.Record
		if w.kind == kindCAA {
			rec.TTL = rrsetTTL(rec, existing, deleting)
		}
		changes = append(changes, Change{Action: ActionCreate, Zone: zone, Record: rec, Why: w.kind.String() + " of " + w.domain})
	}
	return changes, nil
}

// rrsetTTL is the TTL rec must have to join the records of its name and
// type that stay: an RRset has one TTL (RFC 2181 section 5.2), and records
// that stay (an iodef) stay exactly as they were. rec.TTL if none stays.
func rrsetTTL(rec Record, existing []Record, deleting map[int]bool) time.Duration {
	for i, e := range existing {
		if e.Name == rec.Name && e.Type == rec.Type && !deleting[i] && e.TTL > 0 {
			return e.TTL
		}
	}
	return rec.TTL
}

// sameIssuer says whether two dns-persist-01 values name the same CA.
func sameIssuer(a, b string) bool {
	pa, erra := dnsread.ParsePersist(a)
	pb, errb := dnsread.ParsePersist(b)
	return erra == nil && errb == nil && pa.Issuer == pb.Issuer
}

// readBack checks the zone now holds every planned record and none of the
// deleted ones.
func readBack(ctx context.Context, c *Client, z zoneDiff) error {
	recs, err := c.GetRecords(ctx, z.zone)
	if err != nil {
		return fmt.Errorf("reading zone %s back: %w", unfqdn(z.zone), err)
	}
	var now []Record
	for _, r := range recs {
		now = append(now, fromLibdns(r, z.zone))
	}
	var problems []string
	for _, ch := range z.changes {
		found := false
		for _, r := range now {
			if r.same(ch.Record) {
				found = true
				break
			}
		}
		switch {
		case ch.Action != ActionDelete && !found:
			problems = append(problems, "missing "+ch.Record.String())
		case ch.Action == ActionDelete && found:
			problems = append(problems, "still present "+ch.Record.String())
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w in zone %s: %s", ErrReadBack, unfqdn(z.zone), strings.Join(problems, "; "))
	}
	return nil
}

// rollback undoes done, newest first, under a fresh deadline (the caller's
// context may be what failed), and returns cause with what could not be
// undone.
func rollback(ctx context.Context, c *Client, done []Change, opts ApplyOptions, log *slog.Logger, cause error) error {
	if len(done) == 0 {
		return cause
	}
	timeout := opts.RollbackTimeout
	if timeout <= 0 {
		timeout = c.Timeout() * time.Duration(len(done))
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	var left []string
	for i := len(done) - 1; i >= 0; i-- {
		ch := done[i]
		var err error
		if ch.Action == ActionCreate {
			_, err = c.DeleteRecords(rctx, ch.Zone, []libdns.Record{ch.Record.toLibdns(ch.Zone)})
		} else {
			_, err = c.AppendRecords(rctx, ch.Zone, []libdns.Record{ch.Record.toLibdns(ch.Zone)})
		}
		if err != nil {
			left = append(left, fmt.Sprintf("undo %s %s: %v", ch.Action, ch.Record, err))
			continue
		}
		log.Info("dns change undone", "zone", unfqdn(ch.Zone), "action", ch.Action, "name", ch.Record.Name, "type", ch.Record.Type)
	}
	if len(left) > 0 {
		return fmt.Errorf("%w (rolling back failed too: %s)", cause, strings.Join(left, "; "))
	}
	return fmt.Errorf("%w (rolled back %d changes)", cause, len(done))
}
