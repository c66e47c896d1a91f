package proxy

import (
	"encoding/json"
	"github.com/tee-ingress/tee-ingress/internal/syncbuf"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// logLines decodes the JSON log lines in b with msg.
func logLines(t *testing.T, b *syncbuf.Buffer, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// TestAccessLog: with AccessLog, http mode logs one line per request with
// the same fields on the fast path and on net/http (evidence, 421, 502),
// and never the query string.
func TestAccessLog(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	app := startHTTPBackend(t, "app")
	var logs syncbuf.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	_, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: app.target(), Evidence: evidenceHandler(),
		AccessLog: true, Logger: log, Routes: []Route{{Host: "down.test", Target: Target{Scheme: SchemeHTTP, Addr: refusedAddr(t)}}}})
	c := dialH1(t, f, addr)
	c.send("GET /fast?token=sekret HTTP/1.1\r\nHost: app.test\r\n\r\n")
	_, body := c.read("GET")
	c.send("GET /evidences/quote.json HTTP/1.1\r\nHost: app.test\r\n\r\n") // hands the connection to net/http
	c.read("GET")
	c.send("GET /slow?token=sekret HTTP/1.1\r\nHost: down.test\r\n\r\n")
	c.read("GET")
	want := []struct {
		path    string
		status  float64
		bytes   float64
		backend string
	}{
		{"/fast", 200, float64(len(body)), app.target().Addr},
		{"/evidences/quote.json", 200, float64(len(`{"quote":"00"}`)), "local"},
		{"/slow", 502, 0, ""},
	}
	var lines []map[string]any
	waitFor(t, 5*time.Second, "three access log lines", func() bool {
		lines = logLines(t, &logs, "request")
		return len(lines) == len(want)
	})
	for i, w := range want {
		l := lines[i]
		if l["method"] != "GET" || l["path"] != w.path || l["status"] != w.status || l["bytes"] != w.bytes ||
			l["client"] != "127.0.0.1" || l["duration"] == nil || (w.backend != "" && l["backend"] != w.backend) {
			t.Errorf("line %d: %v; want path %s status %v bytes %v backend %q", i, l, w.path, w.status, w.bytes, w.backend)
		}
	}
	if strings.Contains(logs.String(), "sekret") {
		t.Error("the access log carries a query string")
	}
}

// TestAccessLogOff: without AccessLog nothing is logged per request; tcp
// mode logs each connection at debug level.
func TestAccessLogOff(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	app := startHTTPBackend(t, "app")
	var logs syncbuf.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	for _, mode := range []Mode{ModeHTTP, ModeTCP} {
		s, addr := startProxy(t, Config{Certs: f.store, Mode: mode, Default: Target{Addr: app.target().Addr}, Logger: log})
		c := dialH1(t, f, addr)
		c.send("GET /x HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
		c.read("GET")
		c.c.Close()
		waitFor(t, 5*time.Second, "the connection to end", func() bool { return s.Stats().Active == 0 })
	}
	if n := len(logLines(t, &logs, "request")); n != 0 {
		t.Errorf("%d access log lines with AccessLog off", n)
	}
	waitFor(t, 5*time.Second, "tcp mode's connection log", func() bool {
		for _, l := range logLines(t, &logs, "connection closed") {
			if l["served_by"] == "backend" && l["sni"] == "app.test" && l["client"] != nil {
				return true
			}
		}
		return false
	})
}
