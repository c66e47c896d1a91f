package evidence

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
)

func TestParseSHA256SumErrors(t *testing.T) {
	h := strings.Repeat("ab", 32)
	cases := []struct{ in, want string }{
		{"", "empty"},
		{h + "  cert.pem", "newline"},
		{h + " cert.pem\n", "two spaces"},
		{h + "  \n", "two spaces"},
		{h + " *cert.pem\n", "two spaces"},
		{strings.ToUpper(h) + "  cert.pem\n", "lowercase hex"},
		{h[:62] + "  cert.pem\n", "two spaces"},
		{"\\" + h + "  cert.pem\n", "two spaces"},
		{h + "  ../cert.pem\n", "not a bundle file"},
		{h + "  sub/cert.pem\n", "not a bundle file"},
		{h + "  cert-a\\b.pem\n", "not a bundle file"},
		{h + "  quote.json\n", "not a bundle file"},
		{h + "  sha256sum.txt\n", "not a bundle file"},
		{h + "  cert-EXAMPLE.com.pem\n", "not a bundle file"},
		{h + "  cert.pem\r\n", "not a bundle file"},
		{h + "  cert.pem\n" + h + "  cert.pem\n", "listed twice"},
		{h + "  cert.pem\n\n", "line 2"},
		{strings.Repeat(h+"  cert.pem\n", 1) + strings.Repeat("x\n", 2000), "line 2"},
	}
	for _, c := range cases {
		_, err := ParseSHA256Sum([]byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseSHA256Sum(%q) = %v, want error containing %q", truncate(c.in), err, c.want)
		}
	}
}

func TestSHA256SumRoundTrip(t *testing.T) {
	lines := []SumLine{{Name: AccountFile}, {Name: CertFile}, {Name: "cert-*.example.com.pem"}, {Name: "cert-example.com.pem"}, {Name: HistoryFile}}
	for i := range lines {
		lines[i].SHA256[0] = byte(i)
		lines[i].SHA256[31] = 0xff
	}
	b := EncodeSHA256Sum(lines)
	got, err := ParseSHA256Sum(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(EncodeSHA256Sum(got), b) {
		t.Fatal("re-encoding differs")
	}
	if !strings.HasPrefix(string(b), "00"+strings.Repeat("00", 30)+"ff  acme-account.json\n") {
		t.Fatalf("format: %q", b)
	}
}

func TestValidateDomain(t *testing.T) {
	for _, ok := range []string{"example.com", "*.example.com", "a.b-c.xn--p1ai", "localhost", strings.Repeat("a", 63) + ".com"} {
		if err := ValidateDomain(ok); err != nil {
			t.Errorf("ValidateDomain(%q) = %v", ok, err)
		}
	}
	cases := []struct{ in, want string }{
		{"", "empty"},
		{"*.", "whole first label"},
		{"Example.com", "lowercase"},
		{"a..b", "empty label"},
		{"example.com.", "canonical form"},
		{"-a.com", "hyphen"},
		{"a-.com", "hyphen"},
		{"a_b.com", `character "_"`},
		{"a/b.com", `character "/"`},
		{"a.*.com", "whole first label"},
		{"**.com", "whole first label"},
		{strings.Repeat("a", 64) + ".com", "longer than 63"},
		{strings.Repeat("abcdefghi.", 26) + "com", "longer than 253"},
		{"ex ample.com", `character " "`},
		{"é.com", "xn--9ca.com"},
	}
	for _, c := range cases {
		if err := ValidateDomain(c.in); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ValidateDomain(%q) = %v, want %q", c.in, err, c.want)
		}
	}
}

func TestParseEventLogErrors(t *testing.T) {
	d := strings.Repeat("ab", 48)
	cases := []struct{ in, want string }{
		{``, "want a JSON array"},
		{`null`, "got null"},
		{`{}`, "want a JSON array"},
		{`[] []`, "trailing data"},
		{`[{"imr":4,"event_type":1,"digest":"` + d + `"}]`, "imr 4"},
		{`[{"imr":-1}]`, "want a JSON array"},
		{`[{"imr":0,"event_type":1,"digest":"abcd"}]`, "96 hex"},
		{`[{"imr":0,"event_type":1,"digest":""}]`, "boot events need a digest"},
		{`[{"imr":3,"event_type":134217729,"event":"x","event_payload":"zz"}]`, "not hex"},
	}
	for _, c := range cases {
		if _, err := ParseEventLog(c.in); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseEventLog(%q) = %v, want %q", c.in, err, c.want)
		}
	}
	if _, err := ParseEventLog(`[]`); err != nil {
		t.Errorf("empty log: %v", err)
	}
}

func TestReplayRefusesWrongCarriedDigest(t *testing.T) {
	e := Event{IMR: 3, EventType: RuntimeEventType, Event: "app-id", EventPayload: "0102"}
	good := e.RuntimeDigest()
	e.Digest = strings.Repeat("00", 48)
	if _, err := ReplayRTMRs([]Event{e}); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("wrong carried digest: %v", err)
	}
	e.Digest = strings.ToUpper(hexs(good[:]))
	if _, err := ReplayRTMRs([]Event{e}); err != nil {
		t.Fatalf("right carried digest (upper case): %v", err)
	}
}

// Identity values after system-ready are app events and never count.
func TestIdentityOnlyBeforeSystemReady(t *testing.T) {
	rt := func(name, payload string) Event {
		return Event{IMR: 3, EventType: RuntimeEventType, Event: name, EventPayload: payload}
	}
	id := ExtractIdentity([]Event{rt("app-id", "01"), rt("system-ready", ""), rt("compose-hash", "02"), rt("app-id", "03")})
	if id.AppID != "01" || id.ComposeHash != "" || !id.SystemReady {
		t.Fatalf("%+v", id)
	}
	id = ExtractIdentity([]Event{rt("app-id", "01"), rt("app-id", "02"), {IMR: 2, EventType: RuntimeEventType, Event: "instance-id", EventPayload: "03"}})
	if id.AppID != "01" || id.InstanceID != "" || id.SystemReady {
		t.Fatalf("%+v", id)
	}
}

func TestParseAccount(t *testing.T) {
	a, err := ParseAccount([]byte(testAccount))
	if err != nil || a.URI != "https://acme.example/acme/acct/12345" {
		t.Fatalf("%+v %v", a, err)
	}
	// certbot's regr.json carries the public JWK: accepted.
	if _, err := ParseAccount([]byte(`{"body":{"key":{"kty":"EC","crv":"P-256","x":"a","y":"b"}},"uri":"https://ca/acct/1"}`)); err != nil {
		t.Fatalf("public jwk: %v", err)
	}
	cases := []struct{ in, want string }{
		{``, "want a JSON object"},
		{`[]`, "want a JSON object"},
		{`{"uri":"https://ca/acct/1"}`, `"body" missing`},
		{`{"body":[],"uri":"https://ca/acct/1"}`, `"body" missing or not an object`},
		{`{"body":{}}`, `"uri" missing`},
		{`{"body":{},"uri":""}`, `"uri" missing`},
		{`{"body":{},"uri":"http://ca/acct/1"}`, "not an absolute https URL"},
		{`{"body":{},"uri":"acct/1"}`, "not an absolute https URL"},
		{`{"body":{},"uri":"HTTPS://ca/acct/1"}`, "lower case"},
		{`{"body":{},"uri":"https://ca/1"} x`, "trailing data"},
		{`{"body":{"key":"-----BEGIN EC PRIVATE KEY-----"},"uri":"https://ca/1"}`, "PRIVATE KEY"},
		{`{"body":{"key":{"kty":"EC","d":"secret","x":"a"}},"uri":"https://ca/1"}`, "private JWK"},
		{`{"body":{"a":[{"private_key":"x"}]},"uri":"https://ca/1"}`, "looks like a private key"},
		{`{"body":{},"uri":"https://ca/1","privateKey":{}}`, "looks like a private key"},
	}
	for _, c := range cases {
		if _, err := ParseAccount([]byte(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseAccount(%q) = %v, want %q", c.in, err, c.want)
		}
	}
}

func TestParseNonce(t *testing.T) {
	n, err := ParseNonce(strings.Repeat("aB", 32))
	if err != nil || n[0] != 0xab {
		t.Fatalf("%x %v", n, err)
	}
	for _, bad := range []string{"", "ab", strings.Repeat("a", 63), strings.Repeat("a", 65), strings.Repeat("zz", 32)} {
		if _, err := ParseNonce(bad); err == nil || !strings.Contains(err.Error(), "64 hex characters") {
			t.Errorf("ParseNonce(%q) = %v", bad, err)
		}
	}
}

func hexs(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// TestParseTDQuoteBadQEAuthDataSize: a quote whose QE authentication data
// size points past its end (go-tdx-guest v0.3.1 panics on it) is a clear
// error, not a crash.
func TestParseTDQuoteBadQEAuthDataSize(t *testing.T) {
	var resp struct {
		Quote string `json:"quote"`
	}
	if err := json.Unmarshal(readFixture(t, fixtureFull), &resp); err != nil {
		t.Fatal(err)
	}
	raw, err := hex.DecodeString(resp.Quote)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseTDQuote(raw); err != nil {
		t.Fatalf("the untouched fixture: %v", err)
	}
	// Header 48 + body 584 + signed-data size 4 + signature 64 + attestation
	// key 64 + certification data type 2 and size 4 + QE report 384 + its
	// signature 64: the QE authentication data size, two bytes.
	const off = 48 + 584 + 4 + 64 + 64 + 2 + 4 + 384 + 64
	bad := bytes.Clone(raw)
	bad[off], bad[off+1] = 0xff, 0xff
	_, err = ParseTDQuote(bad)
	if err == nil || !strings.Contains(err.Error(), "malformed quote") {
		t.Fatalf("QE auth data size 0xffff: %v, want a malformed-quote error", err)
	}
}
