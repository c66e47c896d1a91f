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
// https://example.com/evidences/. The file names come from the JSON index
// when the server has one, else from sha256sum.txt (dstack-ingress serves no
// index), plus quote.json. Files are fetched by name under base, whatever
// URLs the index names. With live set, quote.json is a fresh quote for that
// nonce (quote.json?nonce=...) instead of the published one. A file
// answering 404 is left out (VerifyBundle then reports it); any other
// failure is an error. When the server names its bundle (BundleHeader) and a
// new bundle was swapped in while fetching, it starts again, a few times.
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

// fetchOnce fetches every file once and reports whether all answers named
// the same bundle (or none named one).
func fetchOnce(ctx context.Context, c *http.Client, u string, live *[32]byte) (map[string][]byte, bool, error) {
	ids := map[string]bool{}
	names, err := fetchNames(ctx, c, u, ids)
	if err != nil {
		return nil, false, err
	}
	files := map[string][]byte{}
	for _, n := range names {
		target := u + url.PathEscape(n)
		if n == QuoteFile && live != nil {
			target += "?nonce=" + hex.EncodeToString(live[:])
		}
		b, status, id, err := get(ctx, c, target, "")
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

func fetchNames(ctx context.Context, c *http.Client, u string, ids map[string]bool) ([]string, error) {
	b, status, id, err := get(ctx, c, u, "application/json")
	if err != nil {
		return nil, err
	}
	if id != "" {
		ids[id] = true
	}
	var idx Index
	if status == http.StatusOK && json.Unmarshal(b, &idx) == nil && len(idx.Files) > 0 {
		var names []string
		for _, f := range idx.Files {
			if !IsBundleFileName(f.Name) {
				return nil, fmt.Errorf("fetching %s: index names %q, not a bundle file", u, truncate(f.Name))
			}
			names = append(names, f.Name)
		}
		return names, nil
	}
	b, status, _, err = get(ctx, c, u+SHA256SumFile, "")
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("fetching %s%s: HTTP status %d", u, SHA256SumFile, status)
	}
	names := []string{SHA256SumFile, QuoteFile}
	lines, err := ParseSHA256Sum(b)
	if err != nil {
		// Verification names the problem; still fetch what a bundle has.
		return append(names, AccountFile, CertFile, HistoryFile), nil
	}
	for _, l := range lines {
		names = append(names, l.Name)
	}
	return names, nil
}

// get fetches one URL, at most maxBundleFileSize bytes, and returns the
// body, the status and the BundleHeader value.
func get(ctx context.Context, c *http.Client, u, accept string) ([]byte, int, string, error) {
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
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBundleFileSize+1))
	if err != nil {
		return nil, 0, "", fmt.Errorf("fetching %s: %w", u, err)
	}
	if len(b) > maxBundleFileSize {
		return nil, 0, "", fmt.Errorf("fetching %s: over %d bytes", u, maxBundleFileSize)
	}
	if accept != "" && resp.StatusCode == http.StatusOK {
		if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != accept {
			return nil, http.StatusNotAcceptable, "", nil
		}
	}
	return b, resp.StatusCode, resp.Header.Get(BundleHeader), nil
}
