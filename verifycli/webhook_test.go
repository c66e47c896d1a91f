package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/evidence"
	"github.com/tee-ingress/tee-ingress/internal/agentsim"
)

// envelope builds a DNS webhook request as the ingress sends it.
func envelope(t *testing.T, sim *agentsim.Simulator, token string, ts time.Time) []byte {
	t.Helper()
	p, _ := json.Marshal(evidence.WebhookPayload{Version: 1, Domain: "app.example.com", Challenge: "dns-persist-01",
		AppID: hex.EncodeToString(sim.AppID()), InstanceID: hex.EncodeToString(sim.InstanceID()), Timestamp: ts.Unix(),
		Records: []evidence.WebhookRecord{{Type: "TXT", Name: "_validation-persist.app.example.com", Value: "letsencrypt.org;accounturi=https://x/1"}}})
	sum := sha256.Sum256(p)
	var rd [64]byte
	copy(rd[:], sum[:])
	var att map[string]any
	json.Unmarshal(quoteFor(t, sim, rd), &att)
	att["report_data"] = hex.EncodeToString(sum[:])
	attJSON, _ := json.Marshal(att)
	b, _ := json.Marshal(evidence.WebhookEnvelope{Payload: string(p), HMACSHA256: evidence.SignWebhook(string(p), token), Attestation: attJSON})
	return b
}

// TestWebhookCommand: verifycli webhook passes a good request and fails a
// wrong token, a changed payload, another app's quote and a stale one.
func TestWebhookCommand(t *testing.T) {
	sim, err := agentsim.New(agentsim.Config{Stripped: true})
	if err != nil {
		t.Fatal(err)
	}
	other, err := agentsim.New(agentsim.Config{Stripped: true})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const token = "the-webhook-token"
	root := write("root.pem", append(sim.RootPEM(), other.RootPEM()...))
	tokenFile := write("token", []byte(token+"\n"))
	good := write("good.json", envelope(t, sim, token, time.Now()))
	r := runCLI(t, "webhook", good, "--token-file", tokenFile, "--tdx-root", root)
	if r.code != 0 || !strings.Contains(r.stdout, "_validation-persist.app.example.com") {
		t.Fatalf("good request: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var env evidence.WebhookEnvelope
	json.Unmarshal(envelope(t, sim, token, time.Now()), &env)
	env.Payload = strings.Replace(env.Payload, "app.example.com", "evil.example.com", 1)
	changed, _ := json.Marshal(env)
	// Another app's quote over its own payload, claiming to be sim's app.
	var forged evidence.WebhookEnvelope
	json.Unmarshal(envelope(t, other, token, time.Now()), &forged)
	forged.Payload = strings.Replace(forged.Payload, hex.EncodeToString(other.AppID()), hex.EncodeToString(sim.AppID()), 1)
	forged.HMACSHA256 = evidence.SignWebhook(forged.Payload, token)
	forgedJSON, _ := json.Marshal(forged)
	for _, c := range []struct {
		name, file, token string
		fails             []string
	}{
		{"wrong token", good, write("wrong", []byte("another")), []string{evidence.CheckWebhookHMAC}},
		{"changed payload", write("changed.json", changed), tokenFile, []string{evidence.CheckWebhookHMAC, evidence.CheckWebhookBinding}},
		{"another app", write("forged.json", forgedJSON), tokenFile, []string{evidence.CheckWebhookBinding, evidence.CheckAppID}},
		{"stale", write("stale.json", envelope(t, sim, token, time.Now().Add(-time.Hour))), tokenFile, []string{evidence.CheckWebhookFresh}},
	} {
		r := runCLI(t, "webhook", c.file, "--token-file", c.token, "--tdx-root", root, "--json")
		if r.code != 1 || r.report == nil {
			t.Errorf("%s: exit %d, want 1\n%s%s", c.name, r.code, r.stdout, r.stderr)
			continue
		}
		failed := map[string]bool{}
		for _, ch := range r.report.Checks {
			if ch.Status == "fail" {
				failed[ch.Name] = true
			}
		}
		for _, f := range c.fails {
			if !failed[f] {
				t.Errorf("%s: %s did not fail (failed: %v)", c.name, f, failed)
			}
		}
	}
	if r := runCLI(t, "webhook", good); r.code != 2 || !strings.Contains(r.stderr, "--token-file") {
		t.Errorf("without --token-file: exit %d %s", r.code, r.stderr)
	}
}
