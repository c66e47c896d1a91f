package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tee-ingress/tee-ingress/evidence"
)

// runAllocating runs verifycli in-process with args and returns the run and
// the bytes the process allocated meanwhile (runtime.MemStats.TotalAlloc):
// an upper bound of what the run held at its peak, since everything it
// held it first allocated. It counts the test servers' allocations too.
// (A child's rusage would not do: on Linux a child started with CLONE_VM
// inherits its parent's high-water mark.)
func runAllocating(t *testing.T, args ...string) (cliRun, uint64) {
	t.Helper()
	var out, errb bytes.Buffer
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	code := run(context.Background(), args, strings.NewReader(""), &out, &errb, false)
	runtime.ReadMemStats(&after)
	return cliRun{stdout: out.String(), stderr: errb.String(), code: code}, after.TotalAlloc - before.TotalAlloc
}

// serveForever writes chunk every pause until the client goes away.
func serveForever(rw http.ResponseWriter, r *http.Request, chunk []byte, pause time.Duration) {
	rw.Header().Set("Content-Type", "application/octet-stream")
	rc := http.NewResponseController(rw)
	t := time.NewTicker(max(pause, time.Millisecond))
	defer t.Stop()
	for {
		if _, err := rw.Write(chunk); err != nil {
			return
		}
		rc.Flush()
		if pause == 0 {
			continue
		}
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
		}
	}
}

// TestHostileServer: a server that offers endless names, drips its files or
// sends a body without end cannot make verifycli hold much memory or run
// past --deadline: each ends with exit 2 and a clear message, having
// allocated under 64 MiB in all.
func TestHostileServer(t *testing.T) {
	cases := []struct {
		name   string
		tamper func(rw http.ResponseWriter, r *http.Request) bool
		args   []string
		msg    string
	}{
		{"an index of 10,000 names", func(rw http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path != evidence.Prefix+"/" || !strings.Contains(r.Header.Get("Accept"), "json") {
				return false
			}
			var idx evidence.Index
			for i := range 10000 {
				idx.Files = append(idx.Files, evidence.IndexEntry{Name: fmt.Sprintf("cert-n%d.example.test.pem", i)})
			}
			rw.Header().Set("Content-Type", "application/json")
			json.NewEncoder(rw).Encode(idx)
			return true
		}, nil, "the index lists 10000 files, at most 1024 accepted"},
		{"sha256sum.txt drips forever", func(rw http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path != evidence.Prefix+"/"+evidence.SHA256SumFile {
				return false
			}
			serveForever(rw, r, []byte("0"), 20*time.Millisecond)
			return true
		}, []string{"--deadline", "2s"}, "the run took longer than --deadline 2s"},
		{"a certificate without end", func(rw http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path != evidence.Prefix+"/"+evidence.CertFileName(testDomain) {
				return false
			}
			serveForever(rw, r, bytes.Repeat([]byte("A"), 64<<10), 0)
			return true
		}, nil, "over 4194304 bytes"},
		{"a certificate announced at 1 GiB", func(rw http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path != evidence.Prefix+"/"+evidence.CertFileName(testDomain) {
				return false
			}
			rw.Header().Set("Content-Length", fmt.Sprint(1<<30))
			rw.WriteHeader(http.StatusOK)
			rw.Write([]byte("A"))
			return true
		}, nil, "1073741824 bytes announced"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.setTamper(tc.tamper)
			args := slices.DeleteFunc(w.args(tc.args...), func(a string) bool { return a == "--json" })
			r, alloc := runAllocating(t, args...)
			if r.code != 2 || !strings.Contains(r.stderr, tc.msg) || !strings.Contains(r.stderr, "hint: ") {
				t.Fatalf("exit %d, stderr:\n%s\nwant exit 2 and %q", r.code, r.stderr, tc.msg)
			}
			if alloc > 64<<20 {
				t.Errorf("the run allocated %d MiB, over 64 MiB", alloc>>20)
			}
			t.Logf("allocated %.1f MiB in all", float64(alloc)/(1<<20))
		})
	}
}
