package agentsim

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Dstack-TEE/dstack/sdk/go/dstack"
	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/verify"

	"github.com/tee-ingress/tee-ingress/evidence"
)

var testSeed = []byte("agentsim test seed, 32 bytes ok!")

func newSim(t *testing.T, cfg Config) *Simulator {
	t.Helper()
	if cfg.Seed == nil {
		cfg.Seed = testSeed
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// socketPath returns a short path: unix socket paths are limited to about
// 100 bytes and t.TempDir can be longer.
func socketPath(t *testing.T, name string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "agentsim")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, name)
}

func unixClient(path string) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
		},
	}
}

func call(t *testing.T, c *http.Client, method, path, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://localhost"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

type quoteJSON struct {
	Quote      string `json:"quote"`
	EventLog   string `json:"event_log"`
	ReportData string `json:"report_data"`
	VMConfig   string `json:"vm_config"`
}

func decodeQuote(t *testing.T, body []byte) ([]byte, []wireEvent, quoteJSON) {
	t.Helper()
	var q quoteJSON
	if err := json.Unmarshal(body, &q); err != nil {
		t.Fatalf("decoding GetQuote response: %v\n%s", err, body)
	}
	raw, err := hex.DecodeString(q.Quote)
	if err != nil {
		t.Fatalf("quote is not hex: %v", err)
	}
	var events []wireEvent
	if err := json.Unmarshal([]byte(q.EventLog), &events); err != nil {
		t.Fatalf("event_log is not a JSON array of events: %v", err)
	}
	return raw, events, q
}

func verifyQuote(raw []byte, roots *x509.CertPool) error {
	q, err := abi.QuoteToProto(raw)
	if err != nil {
		return err
	}
	return verify.TdxQuote(q, &verify.Options{TrustedRoots: roots})
}

func reportData(s string) [64]byte {
	var rd [64]byte
	copy(rd[:], s)
	return rd
}

func TestQuoteVerifiesUnderSimulatorRoot(t *testing.T) {
	for _, stripped := range []bool{false, true} {
		s := newSim(t, Config{Stripped: stripped})
		rd := reportData("bind me")
		body, err := s.QuoteFor(rd)
		if err != nil {
			t.Fatal(err)
		}
		raw, _, q := decodeQuote(t, body)
		if err := verifyQuote(raw, s.Roots()); err != nil {
			t.Fatalf("stripped=%v: verify.TdxQuote with the simulator root: %v", stripped, err)
		}
		if !bytes.Equal(raw[:8], []byte{4, 0, 2, 0, 0x81, 0, 0, 0}) {
			t.Errorf("header = %x, want TDX v4 04000200 81000000", raw[:8])
		}
		if !bytes.Equal(raw[568:632], rd[:]) {
			t.Errorf("quote report_data = %x, want %x", raw[568:632], rd)
		}
		if q.ReportData != hex.EncodeToString(rd[:]) {
			t.Errorf("report_data field = %s, want %x", q.ReportData, rd)
		}
		if !bytes.Equal(raw[184:232], mrTD()) {
			t.Errorf("MRTD at 184..232 = %x, want %x", raw[184:232], mrTD())
		}
		if raw[48+0x78]&1 != 0 {
			t.Error("TD attributes have the debug bit set")
		}
	}
}

func TestDebugSetsTDAttributeBitAndStillVerifies(t *testing.T) {
	s := newSim(t, Config{Debug: true})
	body, err := s.QuoteFor(reportData("debug"))
	if err != nil {
		t.Fatal(err)
	}
	raw, _, _ := decodeQuote(t, body)
	if raw[48+0x78]&1 != 1 {
		t.Fatal("Debug: TD attributes lack the debug bit")
	}
	// Signed like any other quote: only a verifier's own debug check rejects it.
	if err := verifyQuote(raw, s.Roots()); err != nil {
		t.Fatalf("debug quote does not verify under the simulator root: %v", err)
	}
}

func TestQuoteRejectedUnderIntelRoot(t *testing.T) {
	s := newSim(t, Config{})
	intel, err := os.ReadFile("testdata/intel_sgx_root_ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(intel) {
		t.Fatal("testdata/intel_sgx_root_ca.pem holds no certificate")
	}
	body, err := s.QuoteFor(reportData("x"))
	if err != nil {
		t.Fatal(err)
	}
	raw, _, _ := decodeQuote(t, body)
	err = verifyQuote(raw, pool)
	if err == nil {
		t.Fatal("a simulator quote verified under Intel's root CA")
	}
	if !strings.Contains(err.Error(), "PCK Certificate") {
		t.Errorf("error = %v, want a PCK certificate chain failure", err)
	}
	// And under another simulator's root: trust is per seed.
	other := newSim(t, Config{Seed: []byte("another seed, also long enough")})
	if err := verifyQuote(raw, other.Roots()); err == nil {
		t.Error("a quote verified under the root of a simulator with another seed")
	}
}

// quoteRegions locates the parts of a quote, to aim bit flips.
func quoteRegions(t *testing.T, raw []byte) (chainStart, chainEnd int) {
	t.Helper()
	const signed = 0x27c
	certData := signed + 128
	if binary.LittleEndian.Uint16(raw[certData:]) != 6 {
		t.Fatalf("certification data type = %d, want 6", binary.LittleEndian.Uint16(raw[certData:]))
	}
	qe := certData + 6
	auth := qe + 384 + 64
	authLen := int(binary.LittleEndian.Uint16(raw[auth:]))
	pck := auth + 2 + authLen
	if binary.LittleEndian.Uint16(raw[pck:]) != 5 {
		t.Fatalf("PCK chain data type = %d, want 5", binary.LittleEndian.Uint16(raw[pck:]))
	}
	n := int(binary.LittleEndian.Uint32(raw[pck+2:]))
	return pck + 6, pck + 6 + n
}

func TestFlippedBitFailsVerification(t *testing.T) {
	s := newSim(t, Config{})
	body, err := s.QuoteFor(reportData("flip"))
	if err != nil {
		t.Fatal(err)
	}
	raw, _, _ := decodeQuote(t, body)
	if err := verifyQuote(raw, s.Roots()); err != nil {
		t.Fatalf("unmodified quote: %v", err)
	}
	chainStart, chainEnd := quoteRegions(t, raw)
	if chainEnd != len(raw) {
		t.Fatalf("chain ends at %d, quote has %d bytes: unsigned trailing data", chainEnd, len(raw))
	}
	// Every byte up to the PCK chain (header, TD report body, sizes,
	// signature, attestation key, QE report, its signature, auth data,
	// type and size fields), one bit each.
	var offsets []int
	for i := 0; i < chainStart; i++ {
		offsets = append(offsets, i)
	}
	// In the PEM chain, characters inside each base64 line (the last
	// character before padding can carry unused bits), the PEM armour and the
	// trailing NUL.
	chain := raw[chainStart:chainEnd]
	for i := 0; i < len(chain); i += 37 {
		if j := bytes.LastIndexByte(chain[:i+1], '\n'); i-j > 2 && i+2 < len(chain) && chain[i+1] != '\n' && chain[i+2] != '\n' && chain[i+1] != '=' {
			offsets = append(offsets, chainStart+i)
		}
	}
	offsets = append(offsets, chainStart+3, chainEnd-2, chainEnd-1)
	for n, off := range offsets {
		bad := bytes.Clone(raw)
		bad[off] ^= 1 << (n % 8)
		if err := verifyQuote(bad, s.Roots()); err == nil {
			t.Errorf("flipping bit %d of byte %d (0x%x) still verifies", n%8, off, off)
		}
	}
	if len(offsets) < 800 {
		t.Fatalf("only %d offsets tested", len(offsets))
	}
}

func TestEventLogReplaysToRTMRs(t *testing.T) {
	for _, stripped := range []bool{false, true} {
		s := newSim(t, Config{Stripped: stripped})
		body, err := s.QuoteFor(reportData("replay"))
		if err != nil {
			t.Fatal(err)
		}
		raw, events, _ := decodeQuote(t, body)
		var rtmr [4][48]byte
		var names []string
		for _, e := range events {
			var digest []byte
			payload, err := hex.DecodeString(e.EventPayload)
			if err != nil {
				t.Fatalf("event_payload of %q is not hex: %v", e.Event, err)
			}
			switch {
			case e.IMR == 3:
				names = append(names, e.Event)
				if e.EventType != 0x08000001 {
					t.Errorf("runtime event %q has type %#x", e.Event, e.EventType)
				}
				computed := runtimeDigestForTest(e.Event, payload)
				if stripped && e.Digest != "" {
					t.Errorf("stripped form: runtime event %q has digest %q, want empty", e.Event, e.Digest)
				}
				if !stripped && e.Digest != hex.EncodeToString(computed) {
					t.Errorf("full form: runtime event %q digest %s, want %x", e.Event, e.Digest, computed)
				}
				digest = computed
			default:
				if stripped && e.EventPayload != "" {
					t.Errorf("stripped form: boot event has payload %q", e.EventPayload)
				}
				if !stripped {
					sum := sha512.Sum384(payload)
					if e.Digest != hex.EncodeToString(sum[:]) {
						t.Errorf("boot event digest %s is not SHA-384 of its payload", e.Digest)
					}
				}
				if digest, err = hex.DecodeString(e.Digest); err != nil || len(digest) != 48 {
					t.Fatalf("boot event digest %q: want 48 hex bytes", e.Digest)
				}
			}
			h := sha512.New384()
			h.Write(rtmr[e.IMR][:])
			h.Write(digest)
			copy(rtmr[e.IMR][:], h.Sum(nil))
		}
		for i := range 4 {
			if got := raw[376+48*i : 376+48*(i+1)]; !bytes.Equal(got, rtmr[i][:]) {
				t.Errorf("stripped=%v: RTMR%d quoted %x, replayed %x", stripped, i, got, rtmr[i])
			}
		}
		want := "system-preparing app-id compose-hash instance-id boot-mr-done key-provider system-ready"
		if got := strings.Join(names, " "); got != want {
			t.Errorf("runtime events = %s, want %s", got, want)
		}
	}
}

// runtimeDigestForTest restates dstack's formula independently of the code
// under test.
func runtimeDigestForTest(name string, payload []byte) []byte {
	msg := []byte{0x01, 0x00, 0x00, 0x08}
	msg = append(msg, ':')
	msg = append(msg, name...)
	msg = append(msg, ':')
	msg = append(msg, payload...)
	sum := sha512.Sum384(msg)
	return sum[:]
}

func TestIdentityEvents(t *testing.T) {
	compose := []byte(`{"manifest_version":2,"name":"custom","runner":"docker-compose","docker_compose_file":"services: {}\n"}`)
	appID := bytes.Repeat([]byte{0xab}, 20)
	s := newSim(t, Config{ComposeJSON: compose, AppID: appID})
	sum := sha256.Sum256(compose)
	if !bytes.Equal(s.ComposeHash(), sum[:]) {
		t.Fatalf("ComposeHash = %x, want SHA-256 of the compose bytes %x", s.ComposeHash(), sum)
	}
	body, err := s.QuoteFor(reportData(""))
	if err != nil {
		t.Fatal(err)
	}
	raw, events, _ := decodeQuote(t, body)
	got := map[string]string{}
	for _, e := range events {
		if e.IMR == 3 {
			got[e.Event] = e.EventPayload
		}
	}
	if got["compose-hash"] != hex.EncodeToString(sum[:]) {
		t.Errorf("compose-hash event = %s, want %x", got["compose-hash"], sum)
	}
	if got["app-id"] != hex.EncodeToString(appID) {
		t.Errorf("app-id event = %s, want %x", got["app-id"], appID)
	}
	if got["instance-id"] != hex.EncodeToString(s.InstanceID()) || len(s.InstanceID()) != 20 {
		t.Errorf("instance-id event = %s, InstanceID() = %x", got["instance-id"], s.InstanceID())
	}
	kp, _ := hex.DecodeString(got["key-provider"])
	var provider struct{ Name, ID string }
	if err := json.Unmarshal(kp, &provider); err != nil || provider.Name != "kms" || provider.ID == "" {
		t.Errorf("key-provider payload %q: want JSON {name: kms, id}", kp)
	}
	// dstack puts 01 || compose_hash into MRCONFIGID.
	if raw[232] != 1 || !bytes.Equal(raw[233:265], sum[:]) {
		t.Errorf("MRCONFIGID = %x, want 01 || compose hash", raw[232:280])
	}

	def := newSim(t, Config{})
	defSum := sha256.Sum256(defaultCompose)
	if !bytes.Equal(def.ComposeHash(), defSum[:]) || !bytes.Equal(def.ComposeJSON(), defaultCompose) {
		t.Error("the built-in compose hash is not SHA-256 of the built-in app-compose.json")
	}
}

func TestSDKRoundTrip(t *testing.T) {
	s := newSim(t, Config{Stripped: true})
	sock := socketPath(t, "dstack.sock")
	if err := s.Serve(sock); err != nil {
		t.Fatal(err)
	}
	c := dstack.NewDstackClient(dstack.WithEndpoint(sock), dstack.WithLogger(slog.New(slog.DiscardHandler)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	q, err := c.GetQuote(ctx, []byte("short"))
	if err != nil {
		t.Fatalf("GetQuote: %v", err)
	}
	wantRD := reportData("short")
	if q.ReportData != hex.EncodeToString(wantRD[:]) {
		t.Errorf("report_data = %s, want right-padded %x", q.ReportData, wantRD)
	}
	raw, err := q.DecodeQuote()
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyQuote(raw, s.Roots()); err != nil {
		t.Errorf("quote over the socket does not verify: %v", err)
	}
	if _, err := q.DecodeEventLog(); err != nil {
		t.Errorf("DecodeEventLog: %v", err)
	}

	info, err := c.Info(ctx)
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	if info.AppID != hex.EncodeToString(s.AppID()) || info.InstanceID != hex.EncodeToString(s.InstanceID()) ||
		info.ComposeHash != hex.EncodeToString(s.ComposeHash()) || info.AppName != "tee-ingress-demo" {
		t.Errorf("Info = app_id %s instance_id %s compose_hash %s app_name %q; want the simulator's", info.AppID, info.InstanceID, info.ComposeHash, info.AppName)
	}
	tcb, err := info.DecodeTcbInfo()
	if err != nil {
		t.Fatalf("DecodeTcbInfo: %v", err)
	}
	if tcb.AppCompose != string(s.ComposeJSON()) {
		t.Error("tcb_info.app_compose is not the raw compose text")
	}
	if tcb.Rtmr3 != hex.EncodeToString(raw[520:568]) || tcb.Mrtd != hex.EncodeToString(raw[184:232]) {
		t.Errorf("tcb_info rtmr3/mrtd %s/%s disagree with the quote", tcb.Rtmr3, tcb.Mrtd)
	}
	if len(tcb.EventLog) == 0 {
		t.Error("tcb_info has no event log")
	}

	k1, err := c.GetKey(ctx, "tee-ingress/acme-account/v1", "", "secp256k1")
	if err != nil {
		t.Fatalf("GetKey: %v", err)
	}
	k2, err := c.GetKey(ctx, "tee-ingress/acme-account/v1", "other purpose", "")
	if err != nil {
		t.Fatalf("GetKey: %v", err)
	}
	k3, err := c.GetKey(ctx, "another/path", "", "")
	if err != nil {
		t.Fatalf("GetKey: %v", err)
	}
	key, err := k1.DecodeKey()
	if err != nil || len(key) != 32 {
		t.Fatalf("GetKey key = %q (%v), want 32 hex bytes", k1.Key, err)
	}
	if k1.Key != k2.Key || k1.Key == k3.Key {
		t.Errorf("GetKey is not a function of the path alone: %s %s %s", k1.Key, k2.Key, k3.Key)
	}
	sigs, err := k1.DecodeSignatureChain()
	if err != nil || len(sigs) != 2 || len(sigs[0]) != 65 || len(sigs[1]) != 65 {
		t.Errorf("signature_chain = %v (%v), want two 65-byte signatures", k1.SignatureChain, err)
	}
	if _, err := c.GetKey(ctx, "p", "", "rsa"); err == nil || !strings.Contains(err.Error(), "unsupported algorithm") {
		t.Errorf("GetKey with algorithm rsa: err = %v, want unsupported algorithm", err)
	}

	t1, err := c.GetTlsKey(ctx, dstack.WithSubject("app.example"), dstack.WithAltNames([]string{"app.example", "127.0.0.1"}), dstack.WithUsageServerAuth(true))
	if err != nil {
		t.Fatalf("GetTlsKey: %v", err)
	}
	t2, err := c.GetTlsKey(ctx)
	if err != nil {
		t.Fatalf("GetTlsKey: %v", err)
	}
	b1, err1 := t1.AsUint8Array()
	b2, err2 := t2.AsUint8Array()
	if err1 != nil || err2 != nil || bytes.Equal(b1, b2) {
		t.Errorf("GetTlsKey keys must parse and differ per call: %v %v", err1, err2)
	}
	if len(t1.CertificateChain) != 2 {
		t.Fatalf("certificate_chain has %d entries, want leaf and CA", len(t1.CertificateChain))
	}
	leaf, ca := parsePEMCert(t, t1.CertificateChain[0]), parsePEMCert(t, t1.CertificateChain[1])
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "app.example"}); err != nil {
		t.Errorf("TLS certificate does not verify under the app CA: %v", err)
	}

	v, err := c.GetVersion(ctx)
	if err != nil || !strings.Contains(v.Version, "simulator") {
		t.Errorf("GetVersion = %+v, %v", v, err)
	}

	if err := c.EmitEvent(ctx, "app-started", []byte{1, 2, 3}); err != nil {
		t.Fatalf("EmitEvent: %v", err)
	}
	q2, err := c.GetQuote(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw2, events, _ := decodeQuote(t, mustJSON(t, q2))
	if bytes.Equal(raw2[520:568], raw[520:568]) {
		t.Error("EmitEvent did not change RTMR3")
	}
	if last := events[len(events)-1]; last.Event != "app-started" || last.EventPayload != "010203" {
		t.Errorf("last event = %+v, want the emitted one", last)
	}
	if err := verifyQuote(raw2, s.Roots()); err != nil {
		t.Error(err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func parsePEMCert(t *testing.T, s string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		t.Fatalf("not PEM: %q", s)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestWireErrors(t *testing.T) {
	s := newSim(t, Config{})
	sock := socketPath(t, "dstack.sock")
	if err := s.Serve(sock); err != nil {
		t.Fatal(err)
	}
	c := unixClient(sock)
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		want                     string
	}{
		{"report data too long", "POST", "/GetQuote", `{"report_data":"` + strings.Repeat("00", 65) + `"}`, 400, "report_data is 65 bytes; at most 64"},
		{"report data not hex", "POST", "/GetQuote", `{"report_data":"zz"}`, 400, `field "report_data" must be hex`},
		{"body not JSON", "POST", "/GetQuote", `report_data=00`, 400, "want a JSON object"},
		{"unknown method", "POST", "/GetSecrets", `{}`, 404, "method not found"},
		{"legacy needs 64 bytes", "GET", "/prpc/Tappd.RawQuote?report_data=" + strings.Repeat("ab", 32), "", 400, "RawQuote takes exactly 64"},
		{"emit without a name", "POST", "/EmitEvent", `{"payload":""}`, 400, `field "event" is empty`},
		{"tls times reversed", "POST", "/GetTlsKey", `{"not_before":20,"not_after":10}`, 400, "must be later than not_before"},
		{"wrong HTTP method", "DELETE", "/Info", ``, 405, "use POST"},
	} {
		status, body := call(t, c, tc.method, tc.path, tc.body)
		var e struct{ Error string }
		if err := json.Unmarshal(body, &e); err != nil {
			t.Errorf("%s: error body %q is not JSON: %v", tc.name, body, err)
		}
		if status != tc.status || !strings.Contains(e.Error, tc.want) {
			t.Errorf("%s: %d %s, want %d with %q", tc.name, status, body, tc.status, tc.want)
		}
	}

	// GET with query parameters works like POST, as in dstack-ingress's curl.
	rd := reportData("query")
	status, body := call(t, c, "GET", "/GetQuote?report_data="+hex.EncodeToString(rd[:]), "")
	if status != 200 {
		t.Fatalf("GET /GetQuote: %d %s", status, body)
	}
	raw, _, _ := decodeQuote(t, body)
	if !bytes.Equal(raw[568:632], rd[:]) {
		t.Error("GET /GetQuote: report_data not in the quote")
	}
}

func TestLegacyRawQuote(t *testing.T) {
	s := newSim(t, Config{})
	sock := socketPath(t, "tappd.sock")
	if err := s.Serve(sock); err != nil {
		t.Fatal(err)
	}
	rd := reportData("legacy")
	status, body := call(t, unixClient(sock), "GET", "/prpc/Tappd.RawQuote?report_data="+hex.EncodeToString(rd[:]), "")
	if status != 200 {
		t.Fatalf("RawQuote: %d %s", status, body)
	}
	var fields map[string]any
	if err := json.Unmarshal(body, &fields); err != nil {
		t.Fatal(err)
	}
	if _, ok := fields["report_data"]; ok {
		t.Error("tappd RawQuote answered with a report_data field; the real one has none")
	}
	if fields["hash_algorithm"] != "raw" {
		t.Errorf("hash_algorithm = %v, want raw", fields["hash_algorithm"])
	}
	raw, _, _ := decodeQuote(t, body)
	if !bytes.Equal(raw[568:632], rd[:]) {
		t.Error("RawQuote: report_data not in the quote")
	}
	if err := verifyQuote(raw, s.Roots()); err != nil {
		t.Error(err)
	}
}

func TestSeedDeterminism(t *testing.T) {
	a := newSim(t, Config{Seed: testSeed})
	b := newSim(t, Config{Seed: testSeed})
	c := newSim(t, Config{Seed: []byte("a different seed of some length")})
	if !bytes.Equal(a.AppID(), b.AppID()) || !bytes.Equal(a.InstanceID(), b.InstanceID()) {
		t.Error("same seed, different identities")
	}
	if bytes.Equal(a.AppID(), c.AppID()) || bytes.Equal(a.InstanceID(), c.InstanceID()) {
		t.Error("different seeds, same identities")
	}
	if !a.pki.root.PublicKey.(*ecdsa.PublicKey).Equal(b.pki.root.PublicKey) {
		t.Error("same seed, different root keys")
	}
	// A root saved from one run trusts the quotes of the next.
	body, err := b.QuoteFor(reportData("x"))
	if err != nil {
		t.Fatal(err)
	}
	raw, _, _ := decodeQuote(t, body)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(a.RootPEM()) {
		t.Fatal("RootPEM holds no certificate")
	}
	if err := verifyQuote(raw, pool); err != nil {
		t.Errorf("quote of a same-seed simulator does not verify under the saved root: %v", err)
	}
	rootCert := parsePEMCert(t, string(a.RootPEM()))
	if rootCert.Subject.CommonName != "Intel SGX Root CA" || !strings.Contains(rootCert.Subject.String(), "NOT Intel") {
		t.Errorf("root subject = %s", rootCert.Subject)
	}

	// Without a seed every simulator is different.
	r1, r2 := newSim(t, Config{Seed: []byte{}}), newSim(t, Config{Seed: []byte{}})
	if bytes.Equal(r1.AppID(), r2.AppID()) || r1.pki.root.PublicKey.(*ecdsa.PublicKey).Equal(r2.pki.root.PublicKey) {
		t.Error("two unseeded simulators share identities or keys")
	}
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"short app id", Config{AppID: []byte{1, 2}}, "Config.AppID is 2 bytes"},
		{"long instance id", Config{InstanceID: make([]byte, 32)}, "Config.InstanceID is 32 bytes"},
		{"short seed", Config{Seed: []byte("short")}, "Config.Seed is 5 bytes"},
		{"compose not JSON", Config{ComposeJSON: []byte("services:\n  app: {}\n")}, "Config.ComposeJSON is not a JSON object"},
		{"compose not an object", Config{ComposeJSON: []byte(`["a"]`)}, "Config.ComposeJSON is not a JSON object"},
	} {
		_, err := New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestServeLifecycle(t *testing.T) {
	s, err := New(Config{Seed: testSeed})
	if err != nil {
		t.Fatal(err)
	}
	sock := socketPath(t, "dstack.sock")
	// A socket file left by a killed simulator is replaced.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if err := s.Serve(sock); err != nil {
		t.Fatalf("Serve over a stale socket: %v", err)
	}
	if status, _ := call(t, unixClient(sock), "POST", "/Version", ""); status != 200 {
		t.Errorf("Version: %d", status)
	}
	// A live one is not.
	other, err := New(Config{Seed: testSeed})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Serve(sock); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("Serve on a socket in use: err = %v", err)
	}
	// Nor a regular file.
	file := filepath.Join(filepath.Dir(sock), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := other.Serve(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Serve on a regular file: err = %v", err)
	}
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v (%v), want 0600", fi.Mode(), err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket still exists after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Serve(sock); err == nil {
		t.Error("Serve after Close succeeded")
	}
	if err := other.Close(); err != nil {
		t.Error(err)
	}
}

func FuzzDecodeArgs(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `{"report_data":"00ff"}`, `{"report_data":"` + strings.Repeat("ab", 64) + `"}`,
		`{"report_data":"` + strings.Repeat("ab", 65) + `"}`, `{"report_data":"ABCD"}`, `{"report_data":1}`,
		`{"path":"a/b","purpose":"p","algorithm":"ed25519"}`, `{"algorithm":"rsa"}`,
		`{"subject":"x","alt_names":["a","1.2.3.4"],"not_before":1,"not_after":2}`,
		`{"event":"e","payload":"0102"}`, `[1,2]`, `null`, `{"report_data":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if rd, err := decodeQuoteArgs(b); err == nil {
			var args struct {
				ReportData string `json:"report_data"`
			}
			json.Unmarshal(b, &args)
			in, _ := hex.DecodeString(args.ReportData)
			if len(in) > 64 || !bytes.Equal(rd[:len(in)], in) || !bytes.Equal(rd[len(in):], make([]byte, 64-len(in))) {
				t.Fatalf("accepted %q as %x", b, rd)
			}
		}
		if rd, err := decodeRawQuoteArgs(b); err == nil {
			var args struct {
				ReportData string `json:"report_data"`
			}
			json.Unmarshal(b, &args)
			if !strings.EqualFold(hex.EncodeToString(rd[:]), args.ReportData) {
				t.Fatalf("RawQuote accepted %q as %x", b, rd)
			}
		}
		if args, err := decodeKeyArgs(b); err == nil {
			switch args.Algorithm {
			case "", "secp256k1", "k256", "ed25519":
			default:
				t.Fatalf("accepted algorithm %q", args.Algorithm)
			}
		}
		if args, err := decodeTLSKeyArgs(b); err == nil && args.NotBefore != nil && args.NotAfter != nil && *args.NotAfter <= *args.NotBefore {
			t.Fatalf("accepted not_after %d <= not_before %d", *args.NotAfter, *args.NotBefore)
		}
		if name, payload, err := decodeEmitArgs(b); err == nil {
			if name == "" {
				t.Fatal("accepted an empty event name")
			}
			var args emitArgs
			json.Unmarshal(b, &args)
			if !strings.EqualFold(hex.EncodeToString(payload), args.Payload) {
				t.Fatalf("payload %q decoded as %x", args.Payload, payload)
			}
		}
	})
}

// TestGetTLSKeyRATLS: GetTlsKey with usage_ra_tls, through dstack's own SDK,
// gives a certificate in dstack's RA-TLS form that the verifier's RA-TLS
// check passes under the simulator's root, bound to its key.
func TestGetTLSKeyRATLS(t *testing.T) {
	s := newSim(t, Config{Stripped: true})
	sock := socketPath(t, "dstack.sock")
	if err := s.Serve(sock); err != nil {
		t.Fatal(err)
	}
	c := dstack.NewDstackClient(dstack.WithEndpoint(sock), dstack.WithLogger(slog.New(slog.DiscardHandler)))
	k, err := c.GetTlsKey(context.Background(), dstack.WithSubject("app.example"), dstack.WithUsageRaTls(true))
	if err != nil {
		t.Fatalf("GetTlsKey: %v", err)
	}
	leaf := parsePEMCert(t, k.CertificateChain[0])
	if !evidence.IsRATLS(leaf) {
		t.Fatal("usage_ra_tls gave a certificate without the RA-TLS extension")
	}
	cs := evidence.VerifyRATLS(leaf, evidence.VerifyOptions{TrustedRootsPEM: s.RootPEM()})
	for _, ch := range cs {
		if ch.Status == evidence.Fail {
			t.Errorf("%s failed: %s", ch.Name, ch.Detail)
		}
	}
	plain, err := c.GetTlsKey(context.Background(), dstack.WithSubject("app.example"))
	if err != nil || evidence.IsRATLS(parsePEMCert(t, plain.CertificateChain[0])) {
		t.Fatalf("without usage_ra_tls: %v, or an RA-TLS extension anyway", err)
	}
}
