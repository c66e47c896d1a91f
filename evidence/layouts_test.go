package evidence

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/tee-ingress/tee-ingress/internal/agentsim"
)

// Account records as dstack-ingress 2.x publishes them: certbot's regr.json
// in its dns-01 mode, lego's account.json in its tls-alpn-01 mode.
const (
	certbotRegr = `{"body": {}, "uri": "https://acme.example/acme/acct/12345"}`
	legoAccount = `{
	"email": "ops@example.com",
	"registration": {
		"body": {
			"status": "valid",
			"contact": [
				"mailto:ops@example.com"
			]
		},
		"uri": "https://acme.example/acme/acct/12345"
	}
}`
)

// dstackIngressBundle writes a bundle the way dstack-ingress's
// evidence-lib.sh does: the account file copied as acme-account.json, one
// cert-<domain>.pem per domain (single: cert.pem, the pre-2.0 layout),
// `sha256sum acme-account.json cert-*.pem` (the glob in the C locale's
// order), and the agent's GetQuote answer for report_data =
// sha256(sha256sum.txt) in hex right-padded with '0' to 128 characters.
func dstackIngressBundle(t *testing.T, s *agentsim.Simulator, account string, certs map[string][]byte, single bool) map[string][]byte {
	t.Helper()
	files := map[string][]byte{AccountFile: []byte(account)}
	names := []string{}
	for dom, pem := range certs {
		name := "cert-" + dom + ".pem"
		if single {
			name = CertFile
		}
		files[name] = pem
		names = append(names, name)
	}
	sort.Strings(names)
	var sums strings.Builder
	for _, n := range append([]string{AccountFile}, names...) {
		fmt.Fprintf(&sums, "%x  %s\n", sha256.Sum256(files[n]), n)
	}
	files[SHA256SumFile] = []byte(sums.String())
	padded := fmt.Sprintf("%x", sha256.Sum256(files[SHA256SumFile]))
	padded += strings.Repeat("0", 128-len(padded))
	var rd [64]byte
	if _, err := hex.Decode(rd[:], []byte(padded)); err != nil {
		t.Fatal(err)
	}
	q, err := s.QuoteFor(rd)
	if err != nil {
		t.Fatal(err)
	}
	files[QuoteFile] = q
	return files
}

// TestLayoutsInTheField: bundles laid out as dstack-ingress 2.x writes them
// (one domain, several, a wildcard; certbot's and lego's account files) and
// the older single-certificate layout verify, with only a warning for the
// history they do not have, and each names its layout.
func TestLayoutsInTheField(t *testing.T) {
	pki := newTestPKI(t)
	s := newSim(t, true)
	opts := VerifyOptions{TrustedRootsPEM: s.RootPEM(), AppID: hex.EncodeToString(s.AppID())}
	one, _ := pki.chain(t, "app.example.com")
	two, _ := pki.chain(t, "api.example.com")
	wild, _ := pki.chain(t, "*.example.com")
	for _, tc := range []struct {
		name, account string
		certs         map[string][]byte
		single        bool
		layout        string
	}{
		{"single domain", certbotRegr, map[string][]byte{"app.example.com": one}, false, LayoutDstackIngress2},
		{"multi-domain, lego account", legoAccount, map[string][]byte{"app.example.com": one, "api.example.com": two}, false, LayoutDstackIngress2},
		{"wildcard", certbotRegr, map[string][]byte{"*.example.com": wild, "app.example.com": one}, false, LayoutDstackIngress2},
		{"single certificate, before 2.0", certbotRegr, map[string][]byte{"app.example.com": one}, true, LayoutSingle},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := dstackIngressBundle(t, s, tc.account, tc.certs, tc.single)
			pb, err := ParseBundle(files)
			if err != nil {
				t.Fatal(err)
			}
			cs := VerifyBundle(pb, opts)
			if Failed(cs, false) {
				t.Fatalf("fails: %v%s", failedNames(cs), dumpChecks(cs))
			}
			if got := pb.Layout(); got != tc.layout {
				t.Errorf("layout %q, want %q", got, tc.layout)
			}
			if c := checkByName(t, cs, CheckQuoteSignature); c.Got != GotNonIntelRoot || !strings.Contains(c.Detail, "not a TEE") {
				t.Errorf("a simulator quote's signature check does not say it is not Intel's: %+v", c)
			}
			if pb.AccountURI() != "https://acme.example/acme/acct/12345" {
				t.Errorf("account URI %q", pb.AccountURI())
			}
			h := checkByName(t, cs, CheckHistory)
			if h.Status != Warn || !strings.Contains(h.Detail, tc.layout) || !strings.Contains(h.Detail, "CT") {
				t.Errorf("history check %+v: want a warning naming the layout and what cannot be checked", h)
			}
			if l := checkByName(t, cs, CheckFilesListed); !strings.Contains(l.Detail, tc.layout) {
				t.Errorf("files.listed does not name the layout: %q", l.Detail)
			}
		})
	}
}

// TestLayoutTampering: over a dstack-ingress 2.x bundle, each tampering
// fails exactly the one check that names it.
func TestLayoutTampering(t *testing.T) {
	pki := newTestPKI(t)
	s := newSim(t, true)
	opts := VerifyOptions{TrustedRootsPEM: s.RootPEM(), AppID: hex.EncodeToString(s.AppID())}
	one, _ := pki.chain(t, "app.example.com")
	wild, _ := pki.chain(t, "*.example.com")
	other, _ := pki.chain(t, "app.example.com")
	certs := map[string][]byte{"app.example.com": one, "*.example.com": wild}
	files := dstackIngressBundle(t, s, certbotRegr, certs, false)
	another := dstackIngressBundle(t, s, legoAccount, certs, false)
	debugSim, err := agentsim.New(agentsim.Config{Stripped: true, Debug: true, Seed: []byte("tee-ingress evidence tests seed")})
	if err != nil {
		t.Fatal(err)
	}
	defer debugSim.Close()
	// Another root, but the same app: only the signature can tell.
	otherRoot, err := agentsim.New(agentsim.Config{Stripped: true, Seed: []byte("another simulator root, not this"),
		AppID: s.AppID(), InstanceID: s.InstanceID(), ComposeJSON: s.ComposeJSON()})
	if err != nil {
		t.Fatal(err)
	}
	defer otherRoot.Close()

	quoteWith := func(f map[string][]byte, sim *agentsim.Simulator, tail byte) {
		var rd [64]byte
		h := sha256.Sum256(f[SHA256SumFile])
		copy(rd[:], h[:])
		rd[63] = tail
		q, err := sim.QuoteFor(rd)
		if err != nil {
			t.Fatal(err)
		}
		f[QuoteFile] = q
	}
	cases := []struct {
		name string
		edit func(f map[string][]byte)
		want string
	}{
		{"cert replaced", func(f map[string][]byte) { f["cert-app.example.com.pem"] = other }, CheckFileHash + ":cert-app.example.com.pem"},
		{"account changed", func(f map[string][]byte) {
			f[AccountFile] = []byte(strings.Replace(certbotRegr, "12345", "66666", 1))
		}, CheckFileHash + ":" + AccountFile},
		{"sums regenerated, old quote", func(f map[string][]byte) {
			f["cert-app.example.com.pem"] = other
			f[SHA256SumFile] = rehash(f)
		}, CheckReportData},
		{"quote signature bit flipped", func(f map[string][]byte) { f[QuoteFile] = flipQuoteBit(t, f[QuoteFile], 700) }, CheckQuoteSignature},
		{"report_data tail not zero", func(f map[string][]byte) { quoteWith(f, s, 1) }, CheckReportData},
		{"event log edited", func(f map[string][]byte) { f[QuoteFile] = editLastEvent(t, f[QuoteFile]) }, CheckRTMR + "3"},
		{"debug TD", func(f map[string][]byte) { quoteWith(f, debugSim, 0) }, CheckQuoteDebug},
		{"listed file missing", func(f map[string][]byte) { delete(f, "cert-*.example.com.pem") }, CheckFileHash + ":cert-*.example.com.pem"},
		{"unlisted file added", func(f map[string][]byte) { f["notes.txt"] = []byte("hi") }, CheckFilesListed},
		{"quote from another bundle", func(f map[string][]byte) { f[QuoteFile] = another[QuoteFile] }, CheckReportData},
		{"quote under another root", func(f map[string][]byte) { quoteWith(f, otherRoot, 0) }, CheckQuoteSignature},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := cloneFiles(files)
			tc.edit(f)
			pb, err := ParseBundle(f)
			if err != nil {
				t.Fatal(err)
			}
			cs := VerifyBundle(pb, opts)
			if got := failedNames(cs); !slices.Equal(got, []string{tc.want}) {
				t.Fatalf("failed checks %q, want exactly %q%s", got, tc.want, dumpChecks(cs))
			}
		})
	}
}

// flipQuoteBit flips one bit of the quote inside quote.json at byte off.
func flipQuoteBit(t *testing.T, qj []byte, off int) []byte {
	var m map[string]any
	if err := json.Unmarshal(qj, &m); err != nil {
		t.Fatal(err)
	}
	raw, err := hex.DecodeString(m["quote"].(string))
	if err != nil {
		t.Fatal(err)
	}
	raw[off] ^= 0x01
	m["quote"] = hex.EncodeToString(raw)
	out, _ := json.Marshal(m)
	return out
}

// editLastEvent changes the payload of the event log's last event.
func editLastEvent(t *testing.T, qj []byte) []byte {
	var m map[string]any
	if err := json.Unmarshal(qj, &m); err != nil {
		t.Fatal(err)
	}
	var events []map[string]any
	if err := json.Unmarshal([]byte(m["event_log"].(string)), &events); err != nil {
		t.Fatal(err)
	}
	last := events[len(events)-1]
	last["event_payload"] = hex.EncodeToString([]byte("edited"))
	el, _ := json.Marshal(events)
	m["event_log"] = string(el)
	out, _ := json.Marshal(m)
	return out
}
