package evidence

import (
	"context"
	"encoding/hex"
	"encoding/json"
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
// URLs the index names. A file answering 404 is left out (VerifyBundle then
// reports it); any other failure is an error.
func FetchBundle(ctx context.Context, c *http.Client, base string) (map[string][]byte, error) {
	u, err := evidenceBase(base)
	if err != nil {
		return nil, err
	}
	names, err := fetchNames(ctx, c, u)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{}
	for _, n := range names {
		b, status, err := get(ctx, c, u+url.PathEscape(n), "")
		if err != nil {
			return nil, err
		}
		switch status {
		case http.StatusOK:
			files[n] = b
		case http.StatusNotFound:
		default:
			return nil, fmt.Errorf("fetching %s%s: HTTP status %d", u, n, status)
		}
	}
	return files, nil
}

// FetchLiveQuote asks for quote.json?nonce=<hex> under base.
func FetchLiveQuote(ctx context.Context, c *http.Client, base string, nonce [32]byte) ([]byte, error) {
	u, err := evidenceBase(base)
	if err != nil {
		return nil, err
	}
	b, status, err := get(ctx, c, u+QuoteFile+"?nonce="+hex.EncodeToString(nonce[:]), "")
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("fetching live quote from %s: HTTP status %d: %s", u, status, truncate(strings.TrimSpace(string(b))))
	}
	return b, nil
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

func fetchNames(ctx context.Context, c *http.Client, u string) ([]string, error) {
	b, status, err := get(ctx, c, u, "application/json")
	if err != nil {
		return nil, err
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
	b, status, err = get(ctx, c, u+SHA256SumFile, "")
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

// get fetches one URL, at most maxBundleFileSize bytes.
func get(ctx context.Context, c *http.Client, u, accept string) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("fetching %s: %w", u, err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("fetching %s: %w", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBundleFileSize+1))
	if err != nil {
		return nil, 0, fmt.Errorf("fetching %s: %w", u, err)
	}
	if len(b) > maxBundleFileSize {
		return nil, 0, fmt.Errorf("fetching %s: over %d bytes", u, maxBundleFileSize)
	}
	if accept != "" && resp.StatusCode == http.StatusOK {
		if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != accept {
			return nil, http.StatusNotAcceptable, nil
		}
	}
	return b, resp.StatusCode, nil
}
