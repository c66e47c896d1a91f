package agent

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/verify"

	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/internal/agentsim"
)

// agentTestDir returns a short directory: unix socket paths are limited to
// about 100 bytes and t.TempDir can be longer.
func agentTestDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "agent")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func agentTestSim(t *testing.T, cfg agentsim.Config) *agentsim.Simulator {
	t.Helper()
	if cfg.Seed == nil {
		cfg.Seed = []byte("evidence agent test seed 0123456")
	}
	s, err := agentsim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("closing the simulator: %v", err)
		}
	})
	return s
}

// agentTestServe serves h on a unix socket until the test ends.
func agentTestServe(t *testing.T, path string, h http.Handler) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
}

func agentTestRD(s string) [64]byte {
	var rd [64]byte
	copy(rd[:], s)
	return rd
}

func agentTestVerify(t *testing.T, s *agentsim.Simulator, quote []byte) {
	t.Helper()
	p, err := abi.QuoteToProto(quote)
	if err != nil {
		t.Fatal(err)
	}
	if err := verify.TdxQuote(p, &verify.Options{TrustedRoots: s.Roots()}); err != nil {
		t.Errorf("quote does not verify under the simulator root: %v", err)
	}
}

func TestAgentRoundTrip(t *testing.T) {
	s := agentTestSim(t, agentsim.Config{Stripped: true})
	dir := agentTestDir(t)
	sock := filepath.Join(dir, "dstack.sock")
	// Between the client and the simulator, re-indent GetQuote answers so
	// that "verbatim" is tested against bytes no re-encoding would produce.
	var served []byte
	agentTestServe(t, sock, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		if r.URL.Path == "/GetQuote" && rec.Code == 200 {
			var b bytes.Buffer
			if err := json.Indent(&b, body, "", "\t"); err != nil {
				t.Errorf("indenting: %v", err)
			}
			b.WriteString("\n")
			body = b.Bytes()
			served = bytes.Clone(body)
		}
		w.WriteHeader(rec.Code)
		w.Write(body)
	}))

	a, err := New(Options{Endpoint: sock})
	if err != nil {
		t.Fatal(err)
	}
	if a.IsSimulator() || a.Legacy() || a.Endpoint() != sock {
		t.Errorf("explicit endpoint: IsSimulator=%v Legacy=%v Endpoint=%q", a.IsSimulator(), a.Legacy(), a.Endpoint())
	}
	ctx := context.Background()
	rd := agentTestRD("sha256sum.txt digest")
	q, err := a.Quote(ctx, rd)
	if err != nil {
		t.Fatalf("Quote: %v", err)
	}
	if !bytes.Equal(q.Raw, served) {
		t.Error("Quote.Raw is not the agent's response verbatim")
	}
	if !bytes.Equal(q.ReportData, rd[:]) || !bytes.Equal(q.Quote[568:632], rd[:]) {
		t.Errorf("report_data %x / quote %x, want %x", q.ReportData, q.Quote[568:632], rd)
	}
	if q.EventLog == "" || q.VMConfig == "" {
		t.Error("event_log or vm_config missing")
	}
	agentTestVerify(t, s, q.Quote)

	info, err := a.Info(ctx)
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	if !bytes.Equal(info.AppID, s.AppID()) || !bytes.Equal(info.InstanceID, s.InstanceID()) || !bytes.Equal(info.ComposeHash, s.ComposeHash()) {
		t.Errorf("Info = %x %x %x, want the simulator's identity", info.AppID, info.InstanceID, info.ComposeHash)
	}
	var tcb struct {
		AppCompose string `json:"app_compose"`
		RTMR3      string `json:"rtmr3"`
	}
	if err := json.Unmarshal([]byte(info.TCBInfo), &tcb); err != nil || tcb.AppCompose != string(s.ComposeJSON()) {
		t.Errorf("TCBInfo does not carry the raw compose (%v)", err)
	}
	if tcb.RTMR3 != hex.EncodeToString(q.Quote[520:568]) {
		t.Errorf("TCBInfo rtmr3 %s, quote %x", tcb.RTMR3, q.Quote[520:568])
	}
	if info.AppName == "" || info.KeyProviderInfo == "" || len(info.DeviceID) == 0 {
		t.Errorf("Info incomplete: %+v", info)
	}

	k1, err := a.GetKey(ctx, KMSAccountKeyPath)
	if err != nil {
		t.Fatalf("GetKey: %v", err)
	}
	k2, err := a.GetKey(ctx, KMSAccountKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	k3, err := a.GetKey(ctx, "another/path")
	if err != nil {
		t.Fatal(err)
	}
	if len(k1) != 32 || !bytes.Equal(k1, k2) || bytes.Equal(k1, k3) {
		t.Errorf("GetKey: %x %x %x; want 32 bytes, stable per path", k1, k2, k3)
	}
	if _, err := a.GetKey(ctx, ""); err == nil || !strings.Contains(err.Error(), "path is empty") {
		t.Errorf("GetKey(\"\"): err = %v", err)
	}
}

func TestAgentSimulatorEndpoint(t *testing.T) {
	s := agentTestSim(t, agentsim.Config{})
	sock := filepath.Join(agentTestDir(t), "sim.sock")
	if err := s.Serve(sock); err != nil {
		t.Fatal(err)
	}
	// The simulator endpoint wins over discovery, and is reported.
	a, err := New(Options{SimulatorEndpoint: sock, SocketPaths: []string{"/nonexistent/dstack.sock"}})
	if err != nil {
		t.Fatal(err)
	}
	if !a.IsSimulator() || a.Endpoint() != sock {
		t.Errorf("IsSimulator=%v Endpoint=%q", a.IsSimulator(), a.Endpoint())
	}
	if _, err := a.Quote(context.Background(), agentTestRD("x")); err != nil {
		t.Error(err)
	}
	// An explicit endpoint wins over the simulator's.
	b, err := New(Options{Endpoint: sock, SimulatorEndpoint: "/elsewhere.sock"})
	if err != nil || b.IsSimulator() || b.Endpoint() != sock {
		t.Errorf("explicit endpoint: %v IsSimulator=%v Endpoint=%q", err, b.IsSimulator(), b.Endpoint())
	}

	// http:// endpoints, as the SDK allows (the simulator on loopback TCP).
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()
	h, err := New(Options{SimulatorEndpoint: hs.URL + "/"})
	if err != nil {
		t.Fatal(err)
	}
	q, err := h.Quote(context.Background(), agentTestRD("over http"))
	if err != nil {
		t.Fatalf("Quote over http: %v", err)
	}
	agentTestVerify(t, s, q.Quote)
	if info, err := h.Info(context.Background()); err != nil || !bytes.Equal(info.AppID, s.AppID()) {
		t.Errorf("Info over http: %v", err)
	}
}

func TestAgentDiscovery(t *testing.T) {
	dir := agentTestDir(t)
	s := agentTestSim(t, agentsim.Config{})
	sock := filepath.Join(dir, "dstack.sock")
	if err := s.Serve(sock); err != nil {
		t.Fatal(err)
	}
	// A directory is what Docker leaves for a socket missing on the host.
	notSock := filepath.Join(dir, "dir.sock")
	if err := os.Mkdir(notSock, 0o700); err != nil {
		t.Fatal(err)
	}
	a, err := New(Options{SocketPaths: []string{filepath.Join(dir, "missing.sock"), notSock, sock}})
	if err != nil {
		t.Fatal(err)
	}
	if a.Endpoint() != sock || a.IsSimulator() || a.Legacy() {
		t.Errorf("discovered %q (simulator %v, legacy %v), want %q", a.Endpoint(), a.IsSimulator(), a.Legacy(), sock)
	}

	_, err = New(Options{SocketPaths: []string{notSock}, LegacySocket: filepath.Join(dir, "tappd.sock")})
	if err == nil {
		t.Fatal("NewAgent without any socket succeeded")
	}
	for _, want := range []string{notSock, "tappd.sock", "DSTACK_SIMULATOR_ENDPOINT", "/var/run/dstack.sock:/var/run/dstack.sock"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestAgentLegacyTappdFallback(t *testing.T) {
	dir := agentTestDir(t)
	s := agentTestSim(t, agentsim.Config{})
	tappd := filepath.Join(dir, "tappd.sock")
	if err := s.Serve(tappd); err != nil {
		t.Fatal(err)
	}
	a, err := New(Options{SocketPaths: []string{filepath.Join(dir, "dstack.sock")}, LegacySocket: tappd})
	if err != nil {
		t.Fatal(err)
	}
	if !a.Legacy() || a.Endpoint() != tappd {
		t.Fatalf("Legacy=%v Endpoint=%q, want the tappd socket", a.Legacy(), a.Endpoint())
	}
	ctx := context.Background()
	rd := agentTestRD("legacy")
	q, err := a.Quote(ctx, rd)
	if err != nil {
		t.Fatalf("Quote through tappd: %v", err)
	}
	if bytes.Contains(q.Raw, []byte(`"report_data"`)) {
		t.Error("tappd answer has a report_data field; the test does not exercise the legacy shape")
	}
	if !bytes.Equal(q.ReportData, rd[:]) {
		t.Errorf("ReportData = %x, want it read from the quote", q.ReportData)
	}
	agentTestVerify(t, s, q.Quote)
	if _, err := a.Info(ctx); !errors.Is(err, ErrLegacy) {
		t.Errorf("Info on tappd: err = %v, want ErrLegacy", err)
	}
	if _, err := a.GetKey(ctx, KMSAccountKeyPath); !errors.Is(err, ErrLegacy) {
		t.Errorf("GetKey on tappd: err = %v, want ErrLegacy", err)
	}
}

// agentTestBadAgent serves fixed answers on a unix socket and returns an
// Agent talking to it.
func agentTestBadAgent(t *testing.T, timeout time.Duration, h http.HandlerFunc) *Agent {
	t.Helper()
	sock := filepath.Join(agentTestDir(t), "bad.sock")
	agentTestServe(t, sock, h)
	a, err := New(Options{Endpoint: sock, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAgentBadQuoteResponses(t *testing.T) {
	s := agentTestSim(t, agentsim.Config{})
	rd := agentTestRD("asked for this")
	good, err := s.QuoteFor(rd)
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.QuoteFor(agentTestRD("something else"))
	if err != nil {
		t.Fatal(err)
	}
	edit := func(body []byte, f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name   string
		status int
		body   []byte
		want   string
	}{
		{"garbage", 200, []byte("<html>hello</html>"), "want a JSON object"},
		{"error body with 400", 400, []byte("{\n  \"error\": \"Report data is too long\"\n}"), `HTTP 400: "Report data is too long"`},
		{"error body with 200", 200, []byte(`{"error":"no quote today"}`), `quote request failed: "no quote today"`},
		{"server error page", 502, []byte("<html>bad gateway</html>"), "HTTP 502"},
		{"empty object", 200, []byte(`{}`), `field "quote" missing`},
		{"quote for other report data", 200, other, "quote carries report_data"},
		{"report_data field differs", 200, edit(good, func(m map[string]any) {
			m["report_data"] = hex.EncodeToString(make([]byte, 64))
		}), "report_data field is"},
		{"report_data field missing", 200, edit(good, func(m map[string]any) { delete(m, "report_data") }), `no "report_data" field`},
		{"quote body swapped", 200, edit(good, func(m map[string]any) {
			var o map[string]any
			json.Unmarshal(other, &o)
			m["quote"] = o["quote"]
		}), "quote carries report_data"},
		{"quote not hex", 200, edit(good, func(m map[string]any) { m["quote"] = "xyz" }), "not hex"},
		{"quote truncated", 200, edit(good, func(m map[string]any) { m["quote"] = m["quote"].(string)[:1000] }), "parsing TDX quote"},
		{"not TDX v4", 200, edit(good, func(m map[string]any) { m["quote"] = "03" + m["quote"].(string)[2:] }), "only version 4"},
		{"event_log missing", 200, edit(good, func(m map[string]any) { delete(m, "event_log") }), `field "event_log" missing`},
		{"too large", 200, append(bytes.Repeat([]byte(" "), evidence.MaxQuoteJSONBytes+10), good...), "bytes, at most"},
	} {
		a := agentTestBadAgent(t, 0, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tc.status)
			w.Write(tc.body)
		})
		q, err := a.Quote(context.Background(), rd)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Quote = %v, %v; want an error with %q", tc.name, q != nil, err, tc.want)
		}
	}

	// The unmodified answer passes through the same server: the cases above
	// fail for their reason, not the plumbing.
	a := agentTestBadAgent(t, 0, func(w http.ResponseWriter, r *http.Request) { w.Write(good) })
	if q, err := a.Quote(context.Background(), rd); err != nil || !bytes.Equal(q.Raw, good) {
		t.Errorf("good answer: %v", err)
	}
}

func TestAgentDeadline(t *testing.T) {
	release := make(chan struct{})
	a := agentTestBadAgent(t, 100*time.Millisecond, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	start := time.Now()
	_, err := a.Quote(context.Background(), agentTestRD("x"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Quote against a hung agent: err = %v, want a deadline error", err)
	}
	_, err = a.Info(context.Background())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Info against a hung agent: err = %v, want a deadline error", err)
	}
	_, err = a.GetKey(context.Background(), "p")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("GetKey against a hung agent: err = %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("three calls with a 100ms timeout took %v", d)
	}
}

func TestAgentBadInfoAndKey(t *testing.T) {
	for _, tc := range []struct {
		name, path, body, want string
	}{
		{"app_id too short", "/Info", `{"app_id":"abcd","instance_id":"","compose_hash":"` + strings.Repeat("00", 32) + `"}`, `"app_id" has 2 bytes`},
		{"compose_hash not hex", "/Info", `{"app_id":"` + strings.Repeat("00", 20) + `","compose_hash":"zz"}`, `"compose_hash" is not hex`},
		{"info error", "/Info", `{"error":"nope"}`, "nope"},
		{"key too short", "/GetKey", `{"key":"0011","signature_chain":[]}`, "key has 2 bytes, want 32"},
		{"key not hex", "/GetKey", `{"key":"xx"}`, "key is not hex"},
		{"key garbage", "/GetKey", `not json`, "getting key"},
	} {
		a := agentTestBadAgent(t, 0, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != tc.path {
				t.Errorf("%s: unexpected request %s", tc.name, r.URL.Path)
			}
			if strings.Contains(tc.body, "error") {
				w.WriteHeader(400)
			}
			w.Write([]byte(tc.body))
		})
		var err error
		if tc.path == "/Info" {
			_, err = a.Info(context.Background())
		} else {
			_, err = a.GetKey(context.Background(), "p")
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func FuzzParseAgentQuote(f *testing.F) {
	s, err := agentsim.New(agentsim.Config{Seed: []byte("fuzz seed for parseAgentQuote!!!")})
	if err != nil {
		f.Fatal(err)
	}
	good, err := s.QuoteFor(agentTestRD("fuzz"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, false)
	f.Add(good, true)
	f.Add([]byte(`{"error":"x"}`), false)
	f.Add([]byte(`{"quote":"0400","event_log":"[]"}`), true)
	f.Fuzz(func(t *testing.T, body []byte, legacy bool) {
		rd := agentTestRD("fuzz")
		q, err := parseAgentQuote(body, rd, legacy)
		if err != nil {
			return
		}
		if !bytes.Equal(q.Raw, body) {
			t.Fatal("Raw differs from the body")
		}
		if !bytes.Equal(q.ReportData, rd[:]) || len(q.Quote) < 632 || !bytes.Equal(q.Quote[568:632], rd[:]) {
			t.Fatalf("accepted a quote for other report data: %x", q.ReportData)
		}
	})
}
