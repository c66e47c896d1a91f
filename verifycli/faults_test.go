package main

import (
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/evidence"
)

// TestNetworkFaults: a fault of the target is exit status 2 with an error
// and a hint on stderr and nothing on stdout; a fault of a helper service
// (CT, DNS, live quotes) is a warning or skip for the checks it affects,
// never a pass.
func TestNetworkFaults(t *testing.T) {
	t.Run("connection refused", func(t *testing.T) {
		w := newWorld(t)
		addr := closedPort(t)
		r := runCLI(t, append(w.args(), "--connect", addr)...)
		wantError(t, r, "connecting to app.example.test ("+addr+")", "hint: nothing accepts connections at "+addr)
	})
	t.Run("not TLS", func(t *testing.T) {
		w := newWorld(t)
		ln := listen(t, func(c net.Conn) { c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n")) })
		r := runCLI(t, append(w.args(), "--connect", ln)...)
		wantError(t, r, "tls handshake", "did not complete a TLS handshake for app.example.test")
	})
	t.Run("handshake timeout", func(t *testing.T) {
		w := newWorld(t)
		ln := listen(t, func(c net.Conn) { c.SetReadDeadline(time.Now().Add(10 * time.Second)); io.Copy(io.Discard, c) })
		start := time.Now()
		r := runCLI(t, append(w.args(), "--connect", ln, "--timeout", "300ms")...)
		wantError(t, r, "connecting to app.example.test", "no answer within --timeout 300ms")
		if d := time.Since(start); d > 8*time.Second {
			t.Errorf("took %s despite --timeout 300ms", d)
		}
	})
	t.Run("no evidence served", func(t *testing.T) {
		w := newWorld(t)
		w.setTamper(func(rw http.ResponseWriter, r *http.Request) bool { http.NotFound(rw, r); return true })
		r := runCLI(t, w.args()...)
		wantError(t, r, "HTTP status 404", "does not publish /evidences/ here")
	})
	t.Run("server error on a file", func(t *testing.T) {
		w := newWorld(t)
		w.setTamper(func(rw http.ResponseWriter, r *http.Request) bool {
			if ok, _ := isFile(r, evidence.HistoryFile); ok {
				http.Error(rw, "internal error", http.StatusInternalServerError)
				return true
			}
			return false
		})
		r := runCLI(t, w.args()...)
		wantError(t, r, "history.json: HTTP status 500: internal error", "failed to serve its evidence")
	})
	t.Run("404 on a listed file fails its check", func(t *testing.T) {
		w := newWorld(t)
		w.setTamper(func(rw http.ResponseWriter, r *http.Request) bool {
			if ok, _ := isFile(r, evidence.HistoryFile); ok {
				http.NotFound(rw, r)
				return true
			}
			return false
		})
		r := runCLI(t, w.args()...)
		if c := r.check(t, evidence.CheckFileHash+":"+evidence.HistoryFile); r.code != 1 || c.Status != "fail" || c.Got != "missing" {
			t.Fatalf("exit %d, %+v; want exit 1 and the file reported missing:\n%s", r.code, c, r.dump())
		}
	})
	t.Run("certificate changes between connections", func(t *testing.T) {
		w := newWorld(t)
		var once sync.Once
		w.setTamper(func(rw http.ResponseWriter, r *http.Request) bool {
			once.Do(func() {
				c := w.ca.issue(t, nil, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), testDomain).tlsCert()
				w.serveCert.Store(&c)
			})
			rw.Header().Set("Connection", "close")
			return false
		})
		r := runCLI(t, w.args()...)
		if c := r.check(t, checkTLSPinned); r.code != 1 || c.Status != "fail" || !strings.Contains(c.Detail, "different certificate") || !strings.Contains(c.Hint, "interception") {
			t.Fatalf("exit %d, tls.pinned %+v; want exit 1 and the check failed:\n%s", r.code, c, r.dump())
		}
	})
	t.Run("CT API down", func(t *testing.T) {
		w := newWorld(t)
		w.ct.SetStatus(http.StatusBadGateway)
		r := runCLI(t, w.args()...)
		q, c := r.check(t, checkCTQuery), r.check(t, checkCTCertificates)
		if r.code != 0 || q.Status != "warn" || !strings.Contains(q.Detail, "HTTP status 502") || q.Hint == "" || c.Status != "skip" {
			t.Fatalf("exit %d, ct.query %+v, ct.certificates %+v; want exit 0, a warning naming HTTP 502 and a skip:\n%s", r.code, q, c, r.dump())
		}
		if r := runCLI(t, w.args("--strict")...); r.code != 1 {
			t.Errorf("--strict: exit %d, want 1", r.code)
		}
	})
	t.Run("CT API unreachable", func(t *testing.T) {
		w := newWorld(t)
		r := runCLI(t, append(w.args(), "--ct-url", "http://"+closedPort(t)+"/")...)
		if q := r.check(t, checkCTQuery); r.code != 0 || q.Status != "warn" || !strings.Contains(q.Detail, "refused") {
			t.Fatalf("exit %d, ct.query %+v:\n%s", r.code, q, r.dump())
		}
	})
	t.Run("CT off", func(t *testing.T) {
		w := newWorld(t)
		before := w.ct.Hits()
		r := runCLI(t, append(w.args(), "--ct-url", "off")...)
		if q := r.check(t, checkCTQuery); r.code != 0 || q.Status != "skip" || w.ct.Hits() != before {
			t.Fatalf("exit %d, ct.query %+v, CT hits %d:\n%s", r.code, q, w.ct.Hits()-before, r.dump())
		}
	})
	t.Run("DNS resolver unreachable", func(t *testing.T) {
		w := newWorld(t)
		dead := closedUDPPort(t)
		r := runCLI(t, append(w.args(), "--resolver", dead, "--timeout", "2s")...)
		if c := r.check(t, checkCAA); r.code != 0 || c.Status != "warn" || !strings.Contains(c.Detail, "CAA lookup") {
			t.Fatalf("exit %d, dns.caa %+v:\n%s", r.code, c, r.dump())
		}
	})
	t.Run("no live quotes offered", func(t *testing.T) {
		w := newWorld(t)
		w.setTamper(func(rw http.ResponseWriter, r *http.Request) bool {
			if ok, live := isFile(r, evidence.QuoteFile); ok && live {
				http.Error(rw, "live quotes are not available here", http.StatusNotImplemented)
				return true
			}
			return false
		})
		r := runCLI(t, w.args()...)
		if c := r.check(t, checkLiveQuote); r.code != 0 || c.Status != "warn" || !strings.Contains(c.Detail, "HTTP 501") || r.report.Nonce != "" {
			t.Fatalf("exit %d, live.quote %+v, nonce %q:\n%s", r.code, c, r.report.Nonce, r.dump())
		}
	})
	t.Run("live quotes rate-limited", func(t *testing.T) {
		w := newWorld(t)
		var asked atomic.Int32
		w.setTamper(func(rw http.ResponseWriter, r *http.Request) bool {
			if ok, live := isFile(r, evidence.QuoteFile); ok && live {
				asked.Add(1)
				rw.Header().Set("Retry-After", "0")
				http.Error(rw, "too many", http.StatusTooManyRequests)
				return true
			}
			return false
		})
		r := runCLI(t, w.args()...)
		if c := r.check(t, checkLiveQuote); r.code != 0 || c.Status != "warn" || !strings.Contains(c.Detail, "429, 4 attempts") ||
			!strings.Contains(c.Detail, "freshness not proven") {
			t.Fatalf("exit %d, live.quote %+v", r.code, c)
		}
		if n := asked.Load(); n != 4 {
			t.Fatalf("asked for a live quote %d times, want 4 (3 retries)", n)
		}
		// The human result line says it too.
		text := runCLI(t, slices.DeleteFunc(w.args(), func(a string) bool { return a == "--json" })...)
		if !strings.Contains(text.stdout, "result: PASS") || !strings.Contains(text.stdout, "freshness NOT proven") {
			t.Fatalf("result line:\n%s", text.stdout)
		}
	})
	t.Run("live quotes rate-limited twice", func(t *testing.T) {
		w := newWorld(t)
		var asked atomic.Int32
		w.setTamper(func(rw http.ResponseWriter, r *http.Request) bool {
			if ok, live := isFile(r, evidence.QuoteFile); ok && live && asked.Add(1) <= 2 {
				rw.Header().Set("Retry-After", "0")
				http.Error(rw, "too many", http.StatusTooManyRequests)
				return true
			}
			return false
		})
		r := runCLI(t, w.args()...)
		if c := r.check(t, checkLiveQuote); r.code != 0 || c.Status != "pass" || asked.Load() != 3 {
			t.Fatalf("exit %d, live.quote %+v after %d asks", r.code, c, asked.Load())
		}
		if strings.Contains(r.stdout, "freshness") {
			t.Fatal("a proven live quote is reported as not fresh")
		}
	})
	t.Run("gateway without acme-info", func(t *testing.T) {
		w := newWorld(t) // a tee-ingress server, not a gateway
		r := runCLI(t, "gateway", "https://gateway.example.test", "--connect", w.srv.Listener.Addr().String(), "--ca-file", w.caFile)
		wantError(t, r, "/.dstack/acme-info: HTTP status 404", "serve /.dstack/acme-info on their own domain")
	})
	t.Run("tls without /attestation", func(t *testing.T) {
		w := newWorld(t)
		r := runCLI(t, "tls", "https://"+w.srv.Listener.Addr().String())
		wantError(t, r, "/attestation: HTTP status 404", "not running tee-ingress with CERT_SOURCE=self-signed")
	})
}

// wantError asserts exit status 2, nothing on stdout, and stderr with the
// error line (containing msg) and a hint line (containing hint).
func wantError(t *testing.T, r cliRun, msg, hint string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if r.code != 2 || r.stdout != "" || len(lines) != 2 || !strings.HasPrefix(lines[0], "verifycli: error: ") || !strings.Contains(lines[0], msg) ||
		!strings.HasPrefix(lines[1], "hint: ") || !strings.Contains(lines[1], hint) {
		t.Fatalf("exit %d, stdout %q, stderr:\n%s\nwant exit 2, no stdout, an error containing %q and a hint containing %q", r.code, r.stdout, r.stderr, msg, hint)
	}
	for _, l := range lines {
		if strings.HasSuffix(l, ".") || l != strings.TrimSpace(l) {
			t.Errorf("stderr line %q ends with a period or space", l)
		}
	}
}

// closedPort is a loopback TCP address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// closedUDPPort is a loopback UDP address nothing answers on.
func closedUDPPort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := c.LocalAddr().String()
	c.Close()
	return addr
}

// listen serves each TCP connection with handle, then closes it.
func listen(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}
