package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestBytesCountedTCP: the decrypted stream is counted both ways, evidence
// sniffing included (the sniffed bytes still reach the backend).
func TestBytesCountedTCP(t *testing.T) {
	f := newFixture(t)
	be := startTCPBackend(t, echoHandler)
	s, addr := startProxy(t, Config{Certs: f.store, Default: be.target(), Evidence: evidenceHandler()})
	c := dialTLS(t, addr, f.clientTLS("app.test"))
	payload := strings.Repeat("0123456789abcdef", 5000) // several records, pooled buffers
	go func() {
		c.Write([]byte(payload))
		c.CloseWrite()
	}()
	got, err := readAllWithin(t, c, 10*time.Second)
	if err != nil || len(got) != len(payload)+len("bye") {
		t.Fatalf("echo: %d bytes, %v", len(got), err)
	}
	waitFor(t, 5*time.Second, "byte counters to settle", func() bool {
		st := s.Stats()
		return st.BytesToBackends == uint64(len(payload)) && st.BytesToClients == uint64(len(got))
	})
}

// TestBytesCountedHTTP: request and response bodies are counted in http
// mode, on h1 and h2; evidence is not.
func TestBytesCountedHTTP(t *testing.T) {
	const respBody = 70000
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write([]byte(strings.Repeat("x", respBody)))
	}))
	defer be.Close()
	f := newFixture(t)
	s, addr := startProxy(t, Config{Certs: f.store, Mode: ModeHTTP, Default: Target{Scheme: SchemeHTTP, Addr: be.Listener.Addr().String()},
		Evidence: evidenceHandler()})
	var sent, received uint64
	for _, h2 := range []bool{false, true} {
		c := f.httpClient(addr, h2)
		body := strings.Repeat("y", 12345)
		resp, err := c.Post("https://app.test/upload", "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if n != respBody {
			t.Fatalf("h2=%v: response body %d bytes", h2, n)
		}
		sent, received = sent+uint64(len(body)), received+uint64(n)
		if resp, err := c.Get("https://app.test/evidences/"); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		c.CloseIdleConnections()
	}
	waitFor(t, 5*time.Second, "byte counters to settle", func() bool {
		st := s.Stats()
		return st.BytesToBackends == sent && st.BytesToClients == received
	})
}
