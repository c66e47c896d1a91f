package evidence

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// Prefix is the URL path the evidence handler answers under.
const Prefix = "/evidences"

// BundleHeader is set on every answer from a bundle: the hex SHA-256 of its
// sha256sum.txt. Files fetched in several requests belong together only if
// they carry the same value (a new bundle may be swapped in between).
const BundleHeader = "X-Evidence-Bundle"

// maxPathLen bounds request paths: the longest bundle name is
// "cert-" + 253 + ".pem".
const maxPathLen = len(Prefix) + 1 + 5 + 253 + 4

// HandlerConfig configures the /evidences/ handler.
type HandlerConfig struct {
	// Source gives the bundle to serve (a *Publisher). Required.
	Source BundleSource
	// Quoter answers live quotes (quote.json?nonce=...). Nil: live quotes
	// are refused with 501 and the published quote.json is still served.
	Quoter Quoter
	// LiveQuoteRate is the sustained rate of live quotes for all clients
	// together. Zero: 2 per second. Each client (by source address; IPv6
	// by /64) has a quarter of the rate and half the burst of its own.
	LiveQuoteRate rate.Limit
	// LiveQuoteBurst is how many live quotes may come at once. Zero: 4.
	LiveQuoteBurst int
	// LiveQuoteTimeout bounds one call to the Quoter. Zero: 10 seconds.
	LiveQuoteTimeout time.Duration
	// Logger receives failures of live quotes. Nil: discard.
	Logger *slog.Logger
}

// Handler serves the evidence bundle under /evidences/: the index (HTML, or
// JSON for Accept: application/json), each file, and live quotes. It is
// mount-agnostic: it looks only at paths /evidences, /evidences/ and
// /evidences/<name>, and answers 404 for anything else.
type Handler struct {
	src    BundleSource
	quoter Quoter
	live   liveQuotes
	page   pageCache
	log    *slog.Logger
}

var _ http.Handler = (*Handler)(nil)

// NewHandler checks cfg and returns the handler.
func NewHandler(cfg HandlerConfig) (*Handler, error) {
	if cfg.Source == nil {
		return nil, errors.New("evidence handler: Source is required")
	}
	live, err := newLiveQuotes(cfg.LiveQuoteRate, cfg.LiveQuoteBurst, cfg.LiveQuoteTimeout)
	if err != nil {
		return nil, fmt.Errorf("evidence handler: %w", err)
	}
	h := &Handler{src: cfg.Source, quoter: cfg.Quoter, live: live, log: cfg.Logger}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	return h, nil
}

// IndexEntry is one file of the JSON index.
type IndexEntry struct {
	Name   string `json:"name"`
	Size   int    `json:"size"`
	SHA256 string `json:"sha256"`
	URL    string `json:"url"`
}

// Index is the JSON index of /evidences/.
type Index struct {
	Files []IndexEntry `json:"files"`
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, ok := requestName(r)
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed: only GET and HEAD", http.StatusMethodNotAllowed)
		return
	}
	if name == "" && r.URL.Path == Prefix {
		u := Prefix + "/"
		if r.URL.RawQuery != "" {
			u += "?" + r.URL.RawQuery
		}
		w.Header().Set("Location", u)
		w.WriteHeader(http.StatusMovedPermanently)
		return
	}
	b := h.src.Current()
	if b == nil {
		w.Header().Set("Retry-After", "5")
		http.Error(w, "evidence bundle not published yet", http.StatusServiceUnavailable)
		return
	}
	// Public, without credentials: a verifier running in a web page of
	// another origin may read it.
	w.Header().Set("Access-Control-Allow-Origin", "*")
	// Every answer names the bundle it comes from, so a client fetching
	// several files can tell it got them all from one bundle.
	s := b.SumsDigest()
	w.Header().Set(BundleHeader, hex.EncodeToString(s[:]))
	if name == "" {
		h.serveIndex(w, r, b)
		return
	}
	if _, ok := b.files[name]; !ok {
		http.NotFound(w, r)
		return
	}
	if name == QuoteFile && r.URL.Query().Has("nonce") {
		h.serveLiveQuote(w, r, b)
		return
	}
	d := b.digests[name]
	serveBytes(w, r, b.files[name], contentType(name), `"`+hex.EncodeToString(d[:])+`"`)
}

// requestName returns the file name a request asks for ("" for the index)
// and false for anything that is not a plain /evidences path: encoded
// slashes or backslashes, NUL, backslashes, dot segments, overlong paths,
// subfolders.
func requestName(r *http.Request) (string, bool) {
	p := r.URL.Path
	if len(p) > maxPathLen || len(r.URL.RawPath) > 3*maxPathLen {
		return "", false
	}
	if p == Prefix || p == Prefix+"/" {
		return "", true
	}
	name, ok := strings.CutPrefix(p, Prefix+"/")
	if !ok {
		return "", false
	}
	raw := strings.ToLower(r.URL.EscapedPath())
	if strings.Contains(raw, "%2f") || strings.Contains(raw, "%5c") || strings.Contains(raw, "%00") {
		return "", false
	}
	if strings.ContainsAny(name, "/\\\x00") || name == "." || name == ".." {
		return "", false
	}
	if !IsBundleFileName(name) {
		return "", false
	}
	return name, true
}

// contentType of a bundle file.
func contentType(name string) string {
	switch {
	case strings.HasSuffix(name, ".json"):
		return "application/json"
	case strings.HasSuffix(name, ".pem"):
		return "application/x-pem-file"
	default:
		return "text/plain; charset=utf-8"
	}
}

// serveBytes answers GET/HEAD for one immutable file with a strong ETag.
func serveBytes(w http.ResponseWriter, r *http.Request, body []byte, ctype, etag string) {
	hd := w.Header()
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Content-Type-Options", "nosniff")
	if etag != "" {
		hd.Set("ETag", etag)
		if etagMatch(r.Header.Get("If-None-Match"), etag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	hd.Set("Content-Type", ctype)
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// etagMatch implements If-None-Match's weak comparison against one strong tag.
func etagMatch(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}

// wantsJSON reports whether the client prefers application/json over
// text/html; ties go to HTML, so browsers and plain curl get the page.
func wantsJSON(accept string) bool {
	var jsonQ, htmlQ float64
	for _, part := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		q := 1.0
		if s, ok := params["q"]; ok {
			if v, err := strconv.ParseFloat(s, 64); err == nil && v >= 0 && v <= 1 {
				q = v
			}
		}
		switch mt {
		case "application/json":
			jsonQ = math.Max(jsonQ, q)
		case "text/html":
			htmlQ = math.Max(htmlQ, q)
		}
	}
	return jsonQ > 0 && jsonQ > htmlQ
}

func (h *Handler) serveIndex(w http.ResponseWriter, r *http.Request, b *Bundle) {
	pd := h.page.get(b)
	var body bytes.Buffer
	ctype := "text/html; charset=utf-8"
	if wantsJSON(r.Header.Get("Accept")) {
		ctype = "application/json"
		enc := json.NewEncoder(&body)
		enc.SetIndent("", "  ")
		enc.Encode(Index{Files: pd.Files})
	} else if err := indexPage.Execute(&body, page{pageData: pd, Host: r.Host, Live: h.quoter != nil}); err != nil {
		http.Error(w, "rendering index", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Vary", "Accept")
	// The page is a function of the bundle and the variant: tag both.
	s := b.SumsDigest()
	variant := "html"
	if ctype == "application/json" {
		variant = "json"
	}
	serveBytes(w, r, body.Bytes(), ctype, `"`+hex.EncodeToString(s[:16])+"-"+variant+`"`)
}

// ParseNonce decodes a live-quote nonce: exactly 64 hex characters (32 bytes).
func ParseNonce(s string) ([32]byte, error) {
	var n [32]byte
	if len(s) != 64 {
		return n, fmt.Errorf("nonce has %d characters; exactly 64 hex characters (32 bytes) accepted", len(s))
	}
	if _, err := hex.Decode(n[:], []byte(s)); err != nil {
		return n, fmt.Errorf("nonce is not hex; exactly 64 hex characters (32 bytes) accepted")
	}
	return n, nil
}

// serveLiveQuote answers quote.json?nonce=<64 hex> with a fresh quote whose
// report_data is SHA-256(sha256sum.txt) || nonce.
func (h *Handler) serveLiveQuote(w http.ResponseWriter, r *http.Request, b *Bundle) {
	vals := r.URL.Query()["nonce"]
	if len(vals) != 1 {
		http.Error(w, "give one nonce: quote.json?nonce=<64 hex characters>", http.StatusBadRequest)
		return
	}
	nonce, err := ParseNonce(vals[0])
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if h.quoter == nil {
		http.Error(w, "live quotes are not available here; fetch quote.json without a nonce", http.StatusNotImplemented)
		return
	}
	if !h.live.admit(w, r.RemoteAddr, "live quotes") {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.live.timeout)
	defer cancel()
	q, err := checkedQuote(ctx, h.quoter, BundleReportData(b.SumsDigest(), nonce))
	if err != nil {
		h.log.Error("live quote failed", "err", err)
		http.Error(w, "quote unavailable", http.StatusBadGateway)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(q.Raw)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(q.Raw)
	}
}
