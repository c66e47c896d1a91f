package cfemu

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/tee-ingress/tee-ingress/internal/dnsserver"
)

// apiHost is the host libdns/cloudflare sends every request to.
const apiHost = "api.cloudflare.com"

// apiPrefix is the path under which the v4 API lives.
const apiPrefix = "/client/v4"

// Fault is what SetFault's function returns for a request. The zero Fault
// means no fault: the request is served normally.
type Fault struct {
	// Status, when not zero, is sent instead of serving the request, with
	// Body (empty: a Cloudflare error envelope naming the status).
	Status int
	// Hang blocks the request without an answer until the client gives up
	// (its context ends) or the emulator closes; the connection is then
	// dropped. It takes precedence over Status.
	Hang bool
	// Body, with Status zero, is sent with status 200 (a garbled answer).
	Body string
	// Header is added to the fault response (for example Retry-After on a
	// 429). nil adds nothing.
	Header http.Header
}

func (f Fault) isZero() bool {
	return f.Status == 0 && !f.Hang && f.Body == "" && f.Header == nil
}

// Emulator is a Cloudflare API v4 emulator on 127.0.0.1 backed by a
// dnsserver.Server. It is safe for concurrent use.
type Emulator struct {
	store   *dnsserver.Server
	token   string
	srv     *httptest.Server
	closing chan struct{}
	once    sync.Once

	mu     sync.Mutex
	scope  map[string]bool // canonical zone names the token may use; nil = all
	fault  func(*http.Request) Fault
	log    []string
	seq    int
	byKey  map[string]*record
	byID   map[string]*record
	epoch  time.Time
	nowFn  func() time.Time
	client *http.Client
}

// New starts an emulator over HTTPS on a random 127.0.0.1 port, serving every
// zone of store and accepting token as the only valid bearer token. It panics
// if store is nil or token is empty or has characters outside
// [A-Za-z0-9_-], which real Cloudflare tokens never do.
func New(store *dnsserver.Server, token string) *Emulator {
	if store == nil {
		panic("cfemu.New: store is nil; pass the *dnsserver.Server that holds the zones")
	}
	if !validToken(token) {
		panic("cfemu.New: token must be non-empty and use only A-Z, a-z, 0-9, '-' and '_'")
	}
	e := &Emulator{
		store:   store,
		token:   token,
		closing: make(chan struct{}),
		byKey:   make(map[string]*record),
		byID:    make(map[string]*record),
		epoch:   time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC),
		nowFn:   func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) },
	}
	e.srv = httptest.NewUnstartedServer(e)
	// A TLS handshake aborted by a test client is not worth a line on stderr.
	e.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	e.srv.StartTLS()

	base := e.srv.Client().Transport.(*http.Transport).Clone()
	target, _ := url.Parse(e.srv.URL)
	e.client = &http.Client{Transport: &rewriter{target: target, base: base}}
	return e
}

func validToken(t string) bool {
	if t == "" {
		return false
	}
	for _, c := range t {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// rewriter sends requests for api.cloudflare.com to the emulator and refuses
// every other host, so that a test can never reach the real API.
type rewriter struct {
	target *url.URL
	base   http.RoundTripper
}

func (t *rewriter) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Hostname() != apiHost {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("cfemu: refusing request to %q: only %s is emulated", req.URL.Host, apiHost)
	}
	r := req.Clone(req.Context())
	r.URL.Scheme = t.target.Scheme
	r.URL.Host = t.target.Host
	r.Host = apiHost
	return t.base.RoundTrip(r)
}

// HTTPClient returns a client whose transport sends every request for
// https://api.cloudflare.com to the emulator (trusting its certificate) and
// fails requests to any other host. Give it to libdns/cloudflare's
// Provider.HTTPClient.
func (e *Emulator) HTTPClient() *http.Client { return e.client }

// URL returns the emulator's API base, "https://127.0.0.1:port/client/v4",
// the stand-in for https://api.cloudflare.com/client/v4. Its certificate is
// trusted by HTTPClient's transport.
func (e *Emulator) URL() string { return e.srv.URL + apiPrefix }

// Close ends hanging requests and stops the server, waiting for in-flight
// requests to finish.
func (e *Emulator) Close() {
	e.once.Do(func() {
		close(e.closing)
		e.srv.Close()
		if t, ok := e.client.Transport.(*rewriter); ok {
			if b, ok := t.base.(*http.Transport); ok {
				b.CloseIdleConnections()
			}
		}
	})
}

// ScopeToZones limits the token to the named zones (with or without the
// trailing dot), like a least-privilege Cloudflare token: other zones are left
// out of GET /zones and requests for them get 403 with code 10000. No zones
// removes the limit.
func (e *Emulator) ScopeToZones(zones ...string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(zones) == 0 {
		e.scope = nil
		return
	}
	e.scope = make(map[string]bool, len(zones))
	for _, z := range zones {
		e.scope[dns.CanonicalName(z)] = true
	}
}

// SetFault installs f, asked for every request after it is logged and before
// it is authenticated; nil clears it.
func (e *Emulator) SetFault(f func(r *http.Request) Fault) {
	e.mu.Lock()
	e.fault = f
	e.mu.Unlock()
}

// Requests returns the requests received so far, in order, as
// "METHOD /client/v4/path?query".
func (e *Emulator) Requests() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.log...)
}

// ZoneID returns the ID the emulator gives zone (deterministic from its name).
func ZoneID(zone string) string {
	return hashID("zone " + dns.CanonicalName(zone))
}

func hashID(s string) string {
	sum := sha256.Sum256([]byte("cfemu " + s))
	return hex.EncodeToString(sum[:16])
}

// cfError is one entry of an envelope's errors (or error_chain).
type cfError struct {
	Code       int       `json:"code"`
	Message    string    `json:"message"`
	ErrorChain []cfError `json:"error_chain,omitempty"`
}

type resultInfo struct {
	Page       int `json:"page"`
	PerPage    int `json:"per_page"`
	Count      int `json:"count"`
	TotalCount int `json:"total_count"`
	TotalPages int `json:"total_pages"`
}

type envelope struct {
	Success    bool        `json:"success"`
	Errors     []cfError   `json:"errors"`
	Messages   []cfError   `json:"messages"`
	Result     any         `json:"result"`
	ResultInfo *resultInfo `json:"result_info,omitempty"`
}

// apiError is a failed request: HTTP status and Cloudflare's error entries.
type apiError struct {
	status int
	errs   []cfError
}

func (e *apiError) Error() string {
	return fmt.Sprintf("cloudflare api error: HTTP %d: %v", e.status, e.errs)
}

func errBadRequest(code int, msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, errs: []cfError{{Code: code, Message: msg}}}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, aerr *apiError) {
	writeJSON(w, aerr.status, envelope{Errors: aerr.errs, Messages: []cfError{}, Result: nil})
}

func writeResult(w http.ResponseWriter, result any, info *resultInfo) {
	writeJSON(w, http.StatusOK, envelope{Success: true, Errors: []cfError{}, Messages: []cfError{}, Result: result, ResultInfo: info})
}

// ServeHTTP logs the request, applies a fault if one is set, authenticates
// and routes it.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	e.log = append(e.log, r.Method+" "+r.URL.RequestURI())
	fault := e.fault
	e.mu.Unlock()

	if fault != nil {
		if f := fault(r); !f.isZero() {
			e.serveFault(w, r, f)
			return
		}
	}
	if aerr := e.authenticate(r); aerr != nil {
		writeError(w, aerr)
		return
	}
	e.route(w, r)
}

func (e *Emulator) serveFault(w http.ResponseWriter, r *http.Request, f Fault) {
	if f.Hang {
		select {
		case <-r.Context().Done():
		case <-e.closing:
		}
		// Drop the connection rather than answer: a hung API never replies.
		panic(http.ErrAbortHandler)
	}
	for k, vs := range f.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	status := f.Status
	if status == 0 {
		status = http.StatusOK
	}
	if f.Body != "" {
		w.WriteHeader(status)
		_, _ = io.WriteString(w, f.Body)
		return
	}
	code, msg := status, http.StatusText(status)
	if status == http.StatusTooManyRequests {
		// Cloudflare's rate-limit error.
		code, msg = 971, "Please wait and consider throttling your request speed"
	}
	writeError(w, &apiError{status: status, errs: []cfError{{Code: code, Message: msg}}})
}

func (e *Emulator) authenticate(r *http.Request) *apiError {
	h := r.Header.Get("Authorization")
	if h == "" {
		return &apiError{status: http.StatusBadRequest, errs: []cfError{{
			Code: 6003, Message: "Invalid request headers",
			ErrorChain: []cfError{{Code: 6100, Message: "Missing X-Auth-Email header"}, {Code: 6101, Message: "Missing X-Auth-Key header"}},
		}}}
	}
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || !validToken(tok) {
		return &apiError{status: http.StatusBadRequest, errs: []cfError{{
			Code: 6003, Message: "Invalid request headers",
			ErrorChain: []cfError{{Code: 6111, Message: "Invalid format for Authorization header"}},
		}}}
	}
	if subtle.ConstantTimeCompare([]byte(tok), []byte(e.token)) != 1 {
		return &apiError{status: http.StatusForbidden, errs: []cfError{{Code: 9109, Message: "Invalid access token"}}}
	}
	return nil
}

// zoneByID finds a served zone by its API ID and checks the token's scope.
// The caller holds e.mu.
func (e *Emulator) zoneByID(id, path string) (string, *apiError) {
	for _, z := range e.store.Zones() {
		if ZoneID(z) == id {
			if e.scope != nil && !e.scope[z] {
				return "", &apiError{status: http.StatusForbidden, errs: []cfError{{Code: 10000, Message: "Authentication error"}}}
			}
			return z, nil
		}
	}
	return "", &apiError{status: http.StatusBadRequest, errs: []cfError{
		{Code: 7003, Message: fmt.Sprintf("Could not route to %s, perhaps your object identifier is invalid?", path)},
		{Code: 7000, Message: "No route for that URI"},
	}}
}

// syncLocked brings the emulator's record state in line with the store:
// records written to the store directly get an ID, records removed from it are
// forgotten. It returns the records by zone. The caller holds e.mu.
func (e *Emulator) syncLocked() map[string][]*record {
	zones := e.store.Zones()
	byZone := make(map[string][]*record)
	seen := make(map[string]bool)
	for _, rr := range e.store.All() {
		h := rr.Header()
		zone := longestZone(zones, h.Name)
		if zone == "" || h.Rrtype == dns.TypeSOA || (h.Rrtype == dns.TypeNS && h.Name == zone) {
			continue // outside every zone, or managed by Cloudflare itself
		}
		key := recordKey(rr)
		rec := e.byKey[key]
		if rec == nil {
			e.seq++
			now := e.nowFn()
			rec = &record{id: hashID(fmt.Sprintf("record %d", e.seq)), created: now, modified: now}
			e.byKey[key] = rec
			e.byID[rec.id] = rec
		}
		if rec.rr != nil && rec.rr.Header().Ttl != h.Ttl {
			rec.auto = false // changed behind the API's back
		}
		rec.rr, rec.zone = rr, zone
		seen[key] = true
		byZone[zone] = append(byZone[zone], rec)
	}
	for key, rec := range e.byKey {
		if !seen[key] {
			delete(e.byKey, key)
			delete(e.byID, rec.id)
		}
	}
	return byZone
}

func longestZone(zones []string, name string) string {
	best, bestLabels := "", -1
	for _, z := range zones {
		if n := dns.CountLabel(z); n > bestLabels && dns.IsSubDomain(z, name) {
			best, bestLabels = z, n
		}
	}
	return best
}

// sortRecords orders records as the API lists them: by type, name and
// content unless order says otherwise.
func sortRecords(recs []apiRecord, order, direction string) {
	key := func(r apiRecord) []string {
		switch order {
		case "name":
			return []string{r.Name, r.Type, r.Content}
		case "content":
			return []string{r.Content, r.Type, r.Name}
		case "ttl":
			return []string{fmt.Sprintf("%010d", r.TTL), r.Type, r.Name, r.Content}
		case "proxied":
			return []string{fmt.Sprint(r.Proxied), r.Type, r.Name, r.Content}
		default:
			return []string{r.Type, r.Name, r.Content}
		}
	}
	sort.SliceStable(recs, func(i, j int) bool {
		a, b := key(recs[i]), key(recs[j])
		for k := range a {
			if a[k] != b[k] {
				if direction == "desc" {
					return a[k] > b[k]
				}
				return a[k] < b[k]
			}
		}
		return false
	})
}

// paginate cuts one page out of n items. per_page is clamped to [lo, hi].
func paginate(q url.Values, n, def, lo, hi int) (start, end int, info *resultInfo, aerr *apiError) {
	page, ok1 := atoiDefault(q.Get("page"), 1)
	per, ok2 := atoiDefault(q.Get("per_page"), def)
	if !ok1 || !ok2 || page < 1 {
		return 0, 0, nil, errBadRequest(1001, "Invalid pagination: page must be a positive integer and per_page an integer.")
	}
	per = max(lo, min(per, hi))
	start = min((page-1)*per, n)
	end = min(start+per, n)
	pages := (n + per - 1) / per
	return start, end, &resultInfo{Page: page, PerPage: per, Count: end - start, TotalCount: n, TotalPages: pages}, nil
}
