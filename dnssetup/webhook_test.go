package dnssetup

import (
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/evidence/agent"
	"github.com/tee-ingress/tee-ingress/internal/agentsim"
	"github.com/tee-ingress/tee-ingress/internal/dnsserver"
)

type agentQuoter struct{ a *agent.Agent }

func (q agentQuoter) RawQuote(ctx context.Context, rd [64]byte) ([]byte, error) {
	quote, err := q.a.Quote(ctx, rd)
	if err != nil {
		return nil, err
	}
	return quote.Raw, nil
}

func simulator(t *testing.T) (*agentsim.Simulator, Quoter) {
	t.Helper()
	dir, err := os.MkdirTemp("", "whk-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sim, err := agentsim.New(agentsim.Config{Stripped: true})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "dstack.sock")
	if err := sim.Serve(sock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	a, err := agent.New(agent.Options{SimulatorEndpoint: sock})
	if err != nil {
		t.Fatal(err)
	}
	return sim, agentQuoter{a}
}

// TestWebhook: a receiver checks the HMAC, the quote (simulator root) and
// its binding to the payload, then writes the records; the wait that
// follows sees them.
func TestWebhook(t *testing.T) {
	sim, quoter := simulator(t)
	fast, slow, rs, _ := twoResolvers(t)
	const token = "webhook-token-0123456789"
	var failures atomic.Int32
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		p, checks := evidence.VerifyWebhook(body, evidence.WebhookOptions{Token: token,
			Quote: evidence.VerifyOptions{TrustedRootsPEM: sim.RootPEM()}})
		if evidence.Failed(checks, false) {
			failures.Add(1)
			for _, c := range checks {
				if c.Status == evidence.Fail {
					t.Logf("receiver: %s: %s", c.Name, c.Detail)
				}
			}
			http.Error(w, "refused", http.StatusForbidden)
			return
		}
		for _, rec := range p.Records {
			if rec.Type == "TXT" {
				for _, s := range []*dnsserver.Server{fast, slow} {
					s.Add(dnsserver.MustRR(rec.Name + `. 60 IN TXT "` + rec.Value + `"`))
				}
			}
		}
	}))
	defer recv.Close()
	records := want[1:3]
	wh := &Webhook{URL: recv.URL, Token: token, Quoter: quoter, Attempts: 2}
	p := Payload{Version: 1, Domain: "app.example.test", Challenge: "dns-persist-01", AppID: hex.EncodeToString(sim.AppID()),
		InstanceID: hex.EncodeToString(sim.InstanceID()), Timestamp: time.Now().Unix(), Records: records}
	if err := wh.Send(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if failures.Load() != 0 {
		t.Fatal("the receiver refused a good envelope")
	}
	w := &Waiter{Resolvers: rs, Interval: 50 * time.Millisecond, Timeout: 10 * time.Second}
	if err := w.Wait(context.Background(), records); err != nil {
		t.Fatal(err)
	}
	// A wrong token is refused by the receiver, retried, and reported.
	wh.Token = "another-token"
	err := wh.Send(context.Background(), p)
	if err == nil || !strings.Contains(err.Error(), "2 attempts failed") || !strings.Contains(err.Error(), "HTTP 403") {
		t.Fatalf("wrong token: %v", err)
	}
	if failures.Load() != 2 {
		t.Fatalf("the receiver refused %d envelopes, want 2", failures.Load())
	}
	// The payload of another app does not pass the receiver's identity check.
	wh.Token, p.AppID = token, strings.Repeat("ab", 20)
	if err := wh.Send(context.Background(), p); err == nil {
		t.Fatal("an envelope claiming another app id was accepted")
	}
}

// TestWebhookFaults: 5xx answers and a hanging endpoint are retried with
// backoff; no token at all is refused before anything is sent; the token
// never appears in an error.
func TestWebhookFaults(t *testing.T) {
	var calls atomic.Int32
	stop := make(chan struct{})
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch calls.Add(1) {
		case 1:
			http.Error(w, "busy", http.StatusServiceUnavailable)
		case 2:
			select { // hangs past the client's timeout
			case <-r.Context().Done():
			case <-stop:
			}
		}
	}))
	defer recv.Close()
	defer close(stop)
	const token = "secret-token-never-logged"
	wh := &Webhook{URL: recv.URL + "?key=" + token, Token: token, Timeout: 200 * time.Millisecond, Attempts: 3}
	p := Payload{Version: 1, Domain: "app.example.test", Timestamp: time.Now().Unix(), Records: want[:1]}
	if err := wh.Send(context.Background(), p); err != nil {
		t.Fatalf("after a 503 and a timeout, the third attempt should pass: %v", err)
	}
	if calls.Load() != 3 {
		t.Fatalf("%d attempts, want 3", calls.Load())
	}
	calls.Store(10)
	recv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", http.StatusBadGateway) })
	err := wh.Send(context.Background(), p)
	if err == nil || !strings.Contains(err.Error(), "HTTP 502") || strings.Contains(err.Error(), token) {
		t.Fatalf("all attempts failing: %v", err)
	}
	wh.Token = ""
	if err := wh.Send(context.Background(), p); err == nil || !strings.Contains(err.Error(), "Token: not set") {
		t.Fatalf("unsigned: %v", err)
	}
}
