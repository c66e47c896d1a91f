// Package ctlog is a Certificate Transparency search API on loopback for
// tests, compatible with crt.sh's: GET /?q=<name>&output=json lists the
// certificates with that exact name, newest first; GET /?d=<id> downloads
// one in PEM.
package ctlog

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Server is a running CT search API.
type Server struct {
	mu     sync.Mutex
	rows   []row
	nextID int64
	status int // answer every request with this status when set
	srv    *httptest.Server
	hits   atomic.Int64
}

type row struct {
	entry map[string]any
	names []string
	der   []byte
	id    int64
}

// Start serves the API until Close.
func Start() *Server {
	c := &Server{nextID: 9000000000}
	c.srv = httptest.NewServer(c)
	return c
}

// URL is the API's base URL, for verifycli --ct-url.
func (c *Server) URL() string { return c.srv.URL + "/" }

// Close stops the server.
func (c *Server) Close() { c.srv.Close() }

// Hits counts the requests answered.
func (c *Server) Hits() int64 { return c.hits.Load() }

// SetStatus makes every answer this HTTP status (0: normal answers).
func (c *Server) SetStatus(s int) {
	c.mu.Lock()
	c.status = s
	c.mu.Unlock()
}

// Add logs cert and returns its id. A precertificate row carries the same
// DER here, which has the same key and serial as a real precertificate.
func (c *Server) Add(cert *x509.Certificate) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nextID++
	// crt.sh shows the DER integer's bytes: a sign byte when the high bit is set.
	serial := cert.SerialNumber.Bytes()
	if len(serial) > 0 && serial[0]&0x80 != 0 {
		serial = append([]byte{0}, serial...)
	}
	names := append([]string(nil), cert.DNSNames...)
	c.rows = append(c.rows, row{id: c.nextID, names: names, der: cert.Raw, entry: map[string]any{
		"issuer_ca_id":    16418,
		"issuer_name":     cert.Issuer.String(),
		"common_name":     cert.Subject.CommonName,
		"name_value":      strings.Join(names, "\n"),
		"id":              c.nextID,
		"entry_timestamp": cert.NotBefore.UTC().Format("2006-01-02T15:04:05.000"),
		"not_before":      cert.NotBefore.UTC().Format("2006-01-02T15:04:05"),
		"not_after":       cert.NotAfter.UTC().Format("2006-01-02T15:04:05"),
		"serial_number":   hex.EncodeToString(serial),
		"result_count":    len(names) + 1,
	}})
	return c.nextID
}

func (c *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.hits.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.status != 0 {
		http.Error(w, "<html>502 Bad Gateway</html>", c.status)
		return
	}
	q := r.URL.Query()
	if d := q.Get("d"); d != "" {
		for _, row := range c.rows {
			if strconv.FormatInt(row.id, 10) == d {
				w.Header().Set("Content-Type", "application/pkix-cert")
				pem.Encode(w, &pem.Block{Type: "CERTIFICATE", Bytes: row.der})
				return
			}
		}
		http.NotFound(w, r)
		return
	}
	if q.Get("output") != "json" || q.Get("q") == "" {
		http.Error(w, "want ?q=<name>&output=json or ?d=<id>", http.StatusBadRequest)
		return
	}
	name := strings.ToLower(q.Get("q"))
	out := []map[string]any{}
	for i := len(c.rows) - 1; i >= 0; i-- { // newest first, as crt.sh
		for _, n := range c.rows[i].names {
			if strings.ToLower(n) == name {
				out = append(out, c.rows[i].entry)
				break
			}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}
