package cfemu

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// maxBody bounds a request body; a DNS record write is a few hundred bytes.
const maxBody = 1 << 20

func (e *Emulator) route(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, apiPrefix+"/")
	if !ok {
		writeError(w, noRoute())
		return
	}
	p := strings.Split(strings.TrimSuffix(rest, "/"), "/")
	allow := func(methods ...string) bool {
		for _, m := range methods {
			if r.Method == m {
				return true
			}
		}
		writeError(w, &apiError{status: http.StatusMethodNotAllowed, errs: []cfError{{Code: 10405,
			Message: fmt.Sprintf("Method %s not allowed for %s; allowed: %s", r.Method, r.URL.Path, strings.Join(methods, ", "))}}})
		return false
	}
	switch {
	case len(p) == 3 && p[0] == "user" && p[1] == "tokens" && p[2] == "verify":
		if allow(http.MethodGet) {
			e.verifyToken(w)
		}
	case len(p) == 1 && p[0] == "zones":
		if allow(http.MethodGet) {
			e.listZones(w, r.URL.Query())
		}
	case len(p) == 2 && p[0] == "zones":
		if allow(http.MethodGet) {
			e.getZone(w, r, p[1])
		}
	case len(p) == 3 && p[0] == "zones" && p[2] == "dns_records":
		if allow(http.MethodGet, http.MethodPost) {
			if r.Method == http.MethodGet {
				e.listRecords(w, r, p[1])
			} else {
				e.createRecord(w, r, p[1])
			}
		}
	case len(p) == 4 && p[0] == "zones" && p[2] == "dns_records":
		if allow(http.MethodGet, http.MethodPut, http.MethodPatch, http.MethodDelete) {
			e.recordByID(w, r, p[1], p[3])
		}
	default:
		writeError(w, noRoute())
	}
}

func noRoute() *apiError {
	return &apiError{status: http.StatusNotFound, errs: []cfError{{Code: 7000, Message: "No route for that URI"}}}
}

func (e *Emulator) verifyToken(w http.ResponseWriter) {
	writeJSON(w, http.StatusOK, envelope{
		Success:  true,
		Errors:   []cfError{},
		Messages: []cfError{{Code: 10000, Message: "This API Token is valid and active"}},
		Result:   map[string]string{"id": hashID("token"), "status": "active"},
	})
}

// apiZone is a zone as GET /zones returns it.
type apiZone struct {
	ID                  string         `json:"id"`
	Name                string         `json:"name"`
	Status              string         `json:"status"`
	Paused              bool           `json:"paused"`
	Type                string         `json:"type"`
	DevelopmentMode     int            `json:"development_mode"`
	NameServers         []string       `json:"name_servers"`
	OriginalNameServers []string       `json:"original_name_servers"`
	OriginalRegistrar   *string        `json:"original_registrar"`
	OriginalDnshost     *string        `json:"original_dnshost"`
	CreatedOn           time.Time      `json:"created_on"`
	ModifiedOn          time.Time      `json:"modified_on"`
	ActivatedOn         time.Time      `json:"activated_on"`
	Meta                map[string]any `json:"meta"`
	Owner               map[string]any `json:"owner"`
	Account             apiAccount     `json:"account"`
	Permissions         []string       `json:"permissions"`
	Plan                apiPlan        `json:"plan"`
}

type apiAccount struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type apiPlan struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	Price        int    `json:"price"`
	Currency     string `json:"currency"`
	Frequency    string `json:"frequency"`
	IsSubscribed bool   `json:"is_subscribed"`
	CanSubscribe bool   `json:"can_subscribe"`
	LegacyID     string `json:"legacy_id"`
}

func (e *Emulator) zoneView(zone string) apiZone {
	var ns []string
	for _, rr := range e.store.Records(zone, dns.TypeNS) {
		ns = append(ns, strings.TrimSuffix(rr.(*dns.NS).Ns, "."))
	}
	sort.Strings(ns)
	account := apiAccount{ID: hashID("account"), Name: "cfemu"}
	return apiZone{
		ID:                  ZoneID(zone),
		Name:                strings.TrimSuffix(zone, "."),
		Status:              "active",
		Type:                "full",
		NameServers:         ns,
		OriginalNameServers: []string{},
		CreatedOn:           e.epoch,
		ModifiedOn:          e.epoch,
		ActivatedOn:         e.epoch,
		Meta:                map[string]any{"step": 2, "phishing_detected": false},
		Owner:               map[string]any{"id": nil, "type": "organization", "name": account.Name},
		Account:             account,
		Permissions:         []string{"#dns_records:edit", "#dns_records:read", "#zone:read"},
		Plan: apiPlan{ID: "0feeeeeeeeeeeeeeeeeeeeeeeeeeeeee", Name: "Free Website", Currency: "USD",
			IsSubscribed: true, LegacyID: "free"},
	}
}

// zoneNameFilter applies GET /zones' name filter: "example.com" (a trailing
// dot, as libdns/cloudflare sends, is ignored) or "<op>:value" with op one of
// equal, not_equal, starts_with, ends_with, contains.
func zoneNameFilter(filter string) (func(string) bool, *apiError) {
	if filter == "" {
		return func(string) bool { return true }, nil
	}
	op, val, ok := strings.Cut(filter, ":")
	if !ok {
		op, val = "equal", filter
	}
	val = strings.ToLower(val)
	if op == "equal" || op == "not_equal" {
		val = strings.TrimSuffix(val, ".")
	}
	switch op {
	case "equal":
		return func(n string) bool { return n == val }, nil
	case "not_equal":
		return func(n string) bool { return n != val }, nil
	case "starts_with":
		return func(n string) bool { return strings.HasPrefix(n, val) }, nil
	case "ends_with":
		return func(n string) bool { return strings.HasSuffix(n, val) }, nil
	case "contains":
		return func(n string) bool { return strings.Contains(n, val) }, nil
	}
	return nil, errBadRequest(1001, fmt.Sprintf("Invalid zone name filter operator %q; accepted: equal, not_equal, starts_with, ends_with, contains.", op))
}

func (e *Emulator) listZones(w http.ResponseWriter, q url.Values) {
	match, aerr := zoneNameFilter(q.Get("name"))
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	status := q.Get("status")
	e.mu.Lock()
	var zones []apiZone
	for _, z := range e.store.Zones() {
		name := strings.TrimSuffix(z, ".")
		if (e.scope != nil && !e.scope[z]) || !match(name) || (status != "" && status != "active") {
			continue
		}
		zones = append(zones, e.zoneView(z))
	}
	e.mu.Unlock()
	sort.Slice(zones, func(i, j int) bool { return zones[i].Name < zones[j].Name })
	start, end, info, aerr := paginate(q, len(zones), 20, 5, 50)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	page := zones[start:end]
	if page == nil {
		page = []apiZone{}
	}
	writeResult(w, page, info)
}

func (e *Emulator) getZone(w http.ResponseWriter, r *http.Request, id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	zone, aerr := e.zoneByID(id, r.URL.Path)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	writeResult(w, e.zoneView(zone), nil)
}

// recordFilter is one filter of GET dns_records.
type recordFilter func(apiRecord) bool

func recordFilters(q url.Values) ([]recordFilter, *apiError) {
	var fs []recordFilter
	if t := q.Get("type"); t != "" {
		fs = append(fs, func(r apiRecord) bool { return strings.EqualFold(r.Type, t) })
	}
	if p := q.Get("proxied"); p != "" {
		if p != "true" && p != "false" {
			return nil, errBadRequest(1001, fmt.Sprintf("Invalid proxied filter %q; accepted: true, false.", p))
		}
		fs = append(fs, func(r apiRecord) bool { return r.Proxied == (p == "true") })
	}
	for _, field := range []string{"name", "content"} {
		get := func(r apiRecord) string { return r.Name }
		if field == "content" {
			get = func(r apiRecord) string { return r.Content }
		}
		for _, op := range []string{"", ".exact", ".contains", ".startswith", ".endswith"} {
			v, ok := q[field+op]
			if !ok {
				continue
			}
			want := v[0]
			if field == "name" {
				want = strings.TrimSuffix(want, ".")
			}
			kind := strings.TrimPrefix(op, ".")
			if kind == "" {
				kind = "exact"
			}
			fs = append(fs, func(r apiRecord) bool { return matchString(kind, get(r), want) })
		}
	}
	return fs, nil
}

func (e *Emulator) listRecords(w http.ResponseWriter, r *http.Request, zoneID string) {
	q := r.URL.Query()
	filters, aerr := recordFilters(q)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	matchAny := false
	switch q.Get("match") {
	case "", "all":
	case "any":
		matchAny = true
	default:
		writeError(w, errBadRequest(1001, fmt.Sprintf("Invalid match %q; accepted: all, any.", q.Get("match"))))
		return
	}
	switch q.Get("direction") {
	case "", "asc", "desc":
	default:
		writeError(w, errBadRequest(1001, fmt.Sprintf("Invalid direction %q; accepted: asc, desc.", q.Get("direction"))))
		return
	}

	e.mu.Lock()
	zone, aerr := e.zoneByID(zoneID, r.URL.Path)
	if aerr != nil {
		e.mu.Unlock()
		writeError(w, aerr)
		return
	}
	var out []apiRecord
	for _, rec := range e.syncLocked()[zone] {
		v := view(rec, zoneID)
		if keep(v, filters, matchAny) {
			out = append(out, v)
		}
	}
	e.mu.Unlock()

	sortRecords(out, q.Get("order"), q.Get("direction"))
	start, end, info, aerr := paginate(q, len(out), 100, 5, 5000000)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	page := out[start:end]
	if page == nil {
		page = []apiRecord{}
	}
	writeResult(w, page, info)
}

func keep(v apiRecord, filters []recordFilter, matchAny bool) bool {
	if len(filters) == 0 {
		return true
	}
	for _, f := range filters {
		if f(v) == matchAny {
			return matchAny
		}
	}
	return !matchAny
}

func decodeBody(r *http.Request) (recordInput, *apiError) {
	var in recordInput
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	if err := dec.Decode(&in); err != nil {
		return in, errBadRequest(9207, fmt.Sprintf("Request body is invalid: %v", err))
	}
	return in, nil
}

// conflict reports why rec may not join recs (other than self): Cloudflare
// refuses identical records and a CNAME beside any other record but CAA.
func conflict(recs []*record, rr dns.RR, self *record) *apiError {
	name := dns.CanonicalName(rr.Header().Name)
	var others []*record
	for _, o := range recs {
		if o == self || o.rr.Header().Name != name {
			continue
		}
		if dns.IsDuplicate(o.rr, rr) {
			return errBadRequest(81058, "An identical record already exists.")
		}
		others = append(others, o)
	}
	for _, o := range others {
		// Cloudflare serves CAA beside a CNAME (dstack-ingress's CAA pinning
		// on a gateway alias depends on it), and refuses every other pair.
		if t := rr.Header().Rrtype; t == dns.TypeCAA && o.rr.Header().Rrtype == dns.TypeCNAME ||
			t == dns.TypeCNAME && o.rr.Header().Rrtype == dns.TypeCAA {
			continue
		}
		if rr.Header().Rrtype == dns.TypeCNAME {
			return errBadRequest(81053, "An A, AAAA, or CNAME record with that host already exists. For more details, refer to <https://developers.cloudflare.com/dns/manage-dns-records/troubleshooting/records-with-same-name/>.")
		}
		if o.rr.Header().Rrtype == dns.TypeCNAME {
			return errBadRequest(81054, "A CNAME record with that host already exists. For more details, refer to <https://developers.cloudflare.com/dns/manage-dns-records/troubleshooting/records-with-same-name/>.")
		}
	}
	return nil
}

func (e *Emulator) createRecord(w http.ResponseWriter, r *http.Request, zoneID string) {
	in, aerr := decodeBody(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	zone, aerr := e.zoneByID(zoneID, r.URL.Path)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	recs := e.syncLocked()[zone]
	rec, aerr := build(zone, spec{}.apply(in))
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if aerr := conflict(recs, rec.rr, nil); aerr != nil {
		writeError(w, aerr)
		return
	}
	e.store.Add(rec.rr)
	e.seq++
	now := e.nowFn()
	rec.id, rec.zone, rec.created, rec.modified = hashID(fmt.Sprintf("record %d", e.seq)), zone, now, now
	e.byKey[recordKey(rec.rr)] = rec
	e.byID[rec.id] = rec
	writeResult(w, view(rec, zoneID), nil)
}

func (e *Emulator) recordByID(w http.ResponseWriter, r *http.Request, zoneID, id string) {
	var in recordInput
	if r.Method == http.MethodPut || r.Method == http.MethodPatch {
		var aerr *apiError
		if in, aerr = decodeBody(r); aerr != nil {
			writeError(w, aerr)
			return
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	zone, aerr := e.zoneByID(zoneID, r.URL.Path)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	recs := e.syncLocked()[zone]
	rec := e.byID[id]
	if rec == nil || rec.zone != zone {
		writeJSON(w, http.StatusNotFound, envelope{Errors: []cfError{{Code: 81044, Message: "Record does not exist."}}, Messages: []cfError{}})
		return
	}
	switch r.Method {
	case http.MethodGet:
		writeResult(w, view(rec, zoneID), nil)
	case http.MethodDelete:
		e.store.Remove(rec.rr)
		delete(e.byKey, recordKey(rec.rr))
		delete(e.byID, rec.id)
		writeResult(w, map[string]string{"id": rec.id}, nil)
	default:
		base := spec{comment: rec.comment, tags: rec.tags}
		if r.Method == http.MethodPatch {
			base = specFrom(rec)
		}
		next, aerr := build(zone, base.apply(in))
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		if aerr := conflict(recs, next.rr, rec); aerr != nil {
			writeError(w, aerr)
			return
		}
		if !e.store.Replace(rec.rr, next.rr) {
			writeJSON(w, http.StatusNotFound, envelope{Errors: []cfError{{Code: 81044, Message: "Record does not exist."}}, Messages: []cfError{}})
			return
		}
		delete(e.byKey, recordKey(rec.rr))
		rec.rr, rec.content, rec.auto, rec.proxied, rec.comment, rec.tags = next.rr, next.content, next.auto, next.proxied, next.comment, next.tags
		rec.modified = e.nowFn()
		e.byKey[recordKey(rec.rr)] = rec
		writeResult(w, view(rec, zoneID), nil)
	}
}
