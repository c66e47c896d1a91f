package evidence

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// FetchBundle downloads a bundle from an evidence URL such as
// https://example.com/evidences/: sha256sum.txt, every file it lists, and
// quote.json (with live set, a fresh quote for that nonce,
// quote.json?nonce=..., instead of the published one). Nothing else is
// downloaded, so a hostile server cannot make the verifier hold more than
// maxFetchBytes in all: a name the server's JSON index offers that
// sha256sum.txt does not list is in the result with a nil value (not
// downloaded; VerifyBundle reports it unlisted). A listed file answering 404
// is left out (VerifyBundle then reports it); any other failure is an
// error. When the server names its bundle (BundleHeader) and a new bundle
// was swapped in while fetching, it starts again, a few times.
func FetchBundle(ctx context.Context, c *http.Client, base string, live *[32]byte) (map[string][]byte, error) {
	u, err := evidenceBase(base)
	if err != nil {
		return nil, err
	}
	const attempts = 3
	for range attempts {
		files, consistent, err := fetchOnce(ctx, c, u, live)
		if err != nil || consistent {
			return files, err
		}
	}
	return nil, fmt.Errorf("fetching %s: %w during each of %d attempts", u, ErrBundleChanged, attempts)
}

// ErrBundleChanged is returned by FetchBundle when the server swapped in new
// bundles faster than all files could be fetched: retry later.
var ErrBundleChanged = errors.New("the bundle changed while fetching it")

// maxFetchBytes bounds what FetchBundle holds in all: a real bundle is tens
// of KiB.
const maxFetchBytes = 8 << 20

// fetchOnce fetches every file once and reports whether all answers named
// the same bundle (or none named one).
func fetchOnce(ctx context.Context, c *http.Client, u string, live *[32]byte) (map[string][]byte, bool, error) {
	ids := map[string]bool{}
	budget := int64(maxFetchBytes)
	names, offered, err := fetchNames(ctx, c, u, ids, &budget)
	if err != nil {
		return nil, false, err
	}
	files := map[string][]byte{}
	for _, n := range offered {
		files[n] = nil // offered, not listed: never downloaded
	}
	for _, n := range names {
		target := u + url.PathEscape(n)
		if n == QuoteFile && live != nil {
			target += "?nonce=" + hex.EncodeToString(live[:])
		}
		b, status, id, err := get(ctx, c, target, "", &budget)
		if err != nil {
			return nil, false, err
		}
		if id != "" {
			// A 404 counts too: the file may be missing from a newer bundle only.
			ids[id] = true
		}
		switch status {
		case http.StatusOK:
			files[n] = b
		case http.StatusNotFound:
			if n == QuoteFile && live != nil {
				return nil, false, fmt.Errorf("fetching %s: HTTP status 404: the server offers no live quotes", target)
			}
		default:
			return nil, false, fmt.Errorf("fetching %s: HTTP status %d: %s", target, status, truncate(strings.TrimSpace(string(b))))
		}
	}
	return files, len(ids) <= 1, nil
}

// evidenceBase checks base is an http(s) URL and ends it with a slash.
func evidenceBase(base string) (string, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("evidence URL %q: want https://<host>/evidences/", base)
	}
	u.RawQuery, u.Fragment = "", ""
	s := u.String()
	if !strings.HasSuffix(s, "/") {
		s += "/"
	}
	return s, nil
}

// fetchNames reads sha256sum.txt and returns what to download: it, quote.json
// and every file it lists. offered are the names the server's JSON index has
// besides those, for VerifyBundle to report.
func fetchNames(ctx context.Context, c *http.Client, u string, ids map[string]bool, budget *int64) (names, offered []string, err error) {
	b, status, id, err := get(ctx, c, u+SHA256SumFile, "", budget)
	if err != nil {
		return nil, nil, err
	}
	if id != "" {
		ids[id] = true
	}
	if status != http.StatusOK {
		return nil, nil, fmt.Errorf("fetching %s%s: HTTP status %d", u, SHA256SumFile, status)
	}
	names = []string{SHA256SumFile, QuoteFile}
	listed := map[string]bool{SHA256SumFile: true, QuoteFile: true}
	lines, err := ParseSHA256Sum(b)
	if err != nil {
		// Verification names the problem; still fetch what a bundle has.
		lines = []SumLine{{Name: AccountFile}, {Name: CertFile}, {Name: HistoryFile}}
	}
	for _, l := range lines {
		if !listed[l.Name] {
			listed[l.Name] = true
			names = append(names, l.Name)
		}
	}
	ib, status, iid, err := get(ctx, c, u, "application/json", budget)
	if err != nil {
		return nil, nil, err
	}
	if iid != "" {
		ids[iid] = true // an index of a newer bundle is a reason to fetch again
	}
	var idx Index
	if status == http.StatusOK && json.Unmarshal(ib, &idx) == nil {
		if len(idx.Files) > maxBundleFiles {
			return nil, nil, fmt.Errorf("fetching %s: the index lists %d files, at most %d accepted", u, len(idx.Files), maxBundleFiles)
		}
		for _, f := range idx.Files {
			if !IsBundleFileName(f.Name) {
				return nil, nil, fmt.Errorf("fetching %s: index names %q, not a bundle file", u, truncate(f.Name))
			}
			if !listed[f.Name] {
				listed[f.Name] = true
				offered = append(offered, f.Name)
			}
		}
	}
	return names, offered, nil
}

// get fetches one URL, at most maxBundleFileSize bytes and at most what is
// left of budget, which it debits, and returns the body, the status and the
// BundleHeader value. A declared length over the limit is refused before
// the body is read.
func get(ctx context.Context, c *http.Client, u, accept string, budget *int64) ([]byte, int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, "", fmt.Errorf("fetching %s: %w", u, err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, 0, "", fmt.Errorf("fetching %s: %w", u, err)
	}
	defer resp.Body.Close()
	limit := min(int64(maxBundleFileSize), *budget)
	if resp.ContentLength > limit {
		return nil, 0, "", fmt.Errorf("fetching %s: %d bytes announced, over the %d a bundle file may have", u, resp.ContentLength, limit)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, 0, "", fmt.Errorf("fetching %s: %w", u, err)
	}
	if int64(len(b)) > limit {
		return nil, 0, "", fmt.Errorf("fetching %s: over %d bytes (%d at most per file, %d in all)", u, limit, maxBundleFileSize, maxFetchBytes)
	}
	*budget -= int64(len(b))
	if accept != "" && resp.StatusCode == http.StatusOK {
		if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != accept {
			return nil, http.StatusNotAcceptable, "", nil
		}
	}
	return b, resp.StatusCode, resp.Header.Get(BundleHeader), nil
}
