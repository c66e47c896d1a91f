package evidence

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Account is the public ACME account record published as acme-account.json:
// lego's registration.Resource.
type Account struct {
	// URI is the account URL, the value the CAA record's accounturi pins.
	URI string `json:"uri"`
	// Body is the account object as the CA returned it.
	Body json.RawMessage `json:"body"`
}

// ParseAccount checks acme-account.json: a JSON object with "body" (an
// object) and "uri" (an absolute https URL), and nothing that looks like a
// private key: no "PRIVATE KEY" text, no private JWK (an object with "kty"
// and "d" or "k"), no field named like a private key. The registration may
// also sit under "registration", as lego's account.json has it
// ({"email", "registration": {"body", "uri"}}), which dstack-ingress 2.x
// publishes in its tls-alpn-01 mode (its dns-01 mode publishes certbot's
// regr.json, {"body", "uri"}, like ours).
func ParseAccount(b []byte) (*Account, error) {
	if bytes.Contains(b, []byte("PRIVATE KEY")) {
		return nil, errors.New("parsing acme-account.json: contains \"PRIVATE KEY\"; publish only the public registration {\"body\", \"uri\"}")
	}
	var generic any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&generic); err != nil {
		return nil, fmt.Errorf("parsing acme-account.json: want a JSON object {\"body\": {...}, \"uri\": \"https://...\"}: %w", err)
	}
	if dec.More() {
		return nil, errors.New("parsing acme-account.json: trailing data after the JSON object")
	}
	if err := noPrivateMaterial(generic, "$"); err != nil {
		return nil, fmt.Errorf("parsing acme-account.json: %w", err)
	}
	obj, ok := generic.(map[string]any)
	if !ok {
		return nil, errors.New("parsing acme-account.json: want a JSON object {\"body\": {...}, \"uri\": \"https://...\"}")
	}
	if reg, ok := obj["registration"].(map[string]any); ok && obj["uri"] == nil {
		obj = reg // lego's account.json
	}
	body, ok := obj["body"].(map[string]any)
	if !ok {
		return nil, errors.New("parsing acme-account.json: field \"body\" missing or not an object")
	}
	uri, ok := obj["uri"].(string)
	if !ok || uri == "" {
		return nil, errors.New("parsing acme-account.json: field \"uri\" missing or not a string; want the account URL")
	}
	u, err := url.Parse(uri)
	// The scheme is matched as written, not as url.Parse folds it: the URI
	// is compared byte for byte with CAA accounturi, so "HTTPS://" would
	// pass here and fail there.
	if err != nil || !strings.HasPrefix(uri, "https://") || u.Host == "" {
		return nil, fmt.Errorf("parsing acme-account.json: uri %q is not an absolute https URL (want it to begin with \"https://\", lower case)", truncate(uri))
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("parsing acme-account.json: %w", err)
	}
	return &Account{URI: uri, Body: raw}, nil
}

// noPrivateMaterial walks decoded JSON looking for private keys.
func noPrivateMaterial(v any, path string) error {
	switch v := v.(type) {
	case map[string]any:
		if _, isJWK := v["kty"]; isJWK {
			for _, priv := range []string{"d", "k", "p", "q"} {
				if _, ok := v[priv]; ok {
					return fmt.Errorf("%s is a private JWK (has %q); publish only public keys", path, priv)
				}
			}
		}
		for k, e := range v {
			switch strings.ToLower(strings.NewReplacer("_", "", "-", "").Replace(k)) {
			case "privatekey", "privkey", "secretkey", "secret":
				return fmt.Errorf("%s.%s looks like a private key field; publish only the public registration", path, k)
			}
			if err := noPrivateMaterial(e, path+"."+k); err != nil {
				return err
			}
		}
	case []any:
		for i, e := range v {
			if err := noPrivateMaterial(e, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}
