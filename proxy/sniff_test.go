package proxy

import (
	"strings"
	"testing"
)

func TestSniff(t *testing.T) {
	for in, want := range map[string]sniffResult{
		"":                                sniffMore,
		"G":                               sniffMore,
		"GET /evidences":                  sniffMore,
		"HEAD /evid":                      sniffMore,
		"GET /evidences/":                 sniffEvidence,
		"GET /evidences ":                 sniffEvidence,
		"GET /evidences?nonce=1":          sniffEvidence,
		"HEAD /evidences/quote.json HTTP": sniffEvidence,
		"GET /evidencesX":                 sniffBackend,
		"GET / HTTP/1.1":                  sniffBackend,
		"get /evidences/":                 sniffBackend,  // methods are case-sensitive
		"POST /evidences/":                sniffEvidence, // the handler answers 405, as in http mode
		"OPTIONS /evidences ":             sniffEvidence,
		"POST /x":                         sniffBackend,
		"ABCDEFGHIJKLMNOPQ /evidences/":   sniffBackend, // no method is that long
		" /evidences/":                    sniffBackend,
		"GET  /evidences/":                sniffBackend,
		"PRI * HTTP/2.0\r\n":              sniffBackend, // h2 preface
		"\x16\x03\x01":                    sniffBackend,
		"hi\n":                            sniffBackend,
		"H":                               sniffMore,
		"HE":                              sniffMore,
		"HEL":                             sniffMore, // still a method
		"HEL/":                            sniffBackend,
	} {
		if got := sniff([]byte(in)); got != want {
			t.Errorf("sniff(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestIsEvidencePath(t *testing.T) {
	for p, want := range map[string]bool{
		"/evidences": true, "/evidences/": true, "/evidences/quote.json": true,
		"/evidencesX": false, "/": false, "/evidence": false, "/x/evidences/": false, "": false,
	} {
		if got := isEvidencePath(p); got != want {
			t.Errorf("isEvidencePath(%q) = %v", p, got)
		}
	}
}

// sniffReference decides the same question the slow, obvious way: a
// request line is a method of 1 to 16 capital letters, one space, and the
// root followed by '/', '?' or ' '.
func sniffReference(b string) sniffResult {
	method, rest, spaced := strings.Cut(b, " ")
	if len(method) > maxMethod || strings.Trim(method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
		return sniffBackend
	}
	if !spaced {
		return sniffMore
	}
	if method == "" {
		return sniffBackend
	}
	for _, end := range []string{"/", "?", " "} {
		if strings.HasPrefix(rest, "/evidences"+end) {
			return sniffEvidence
		}
	}
	if len(rest) <= len("/evidences") && strings.HasPrefix("/evidences", rest) {
		return sniffMore
	}
	return sniffBackend
}

func FuzzSniff(f *testing.F) {
	for _, s := range []string{"GET /evidences/", "HEAD /evidences?x", "GET /", "PRI * HTTP/2.0", "GET /evidencesX", ""} {
		f.Add([]byte(s), []byte("more"))
	}
	f.Fuzz(func(t *testing.T, b, more []byte) {
		got := sniff(b)
		if want := sniffReference(string(b)); got != want {
			t.Fatalf("sniff(%q) = %v, reference says %v", b, got, want)
		}
		if got == sniffMore && len(b) >= maxMethod+len(" /evidences/") {
			t.Fatalf("sniff(%q) undecided after %d bytes", b, len(b))
		}
		// A decision never changes with more bytes: the proxy acts on it at once.
		if got != sniffMore {
			if again := sniff(append(b[:len(b):len(b)], more...)); again != got {
				t.Fatalf("sniff(%q) = %v but with %q appended %v", b, got, more, again)
			}
		}
	})
}

func TestLocalPathsConfigured(t *testing.T) {
	l := newLocalPaths([]string{"/attestation"})
	for in, want := range map[string]sniffResult{
		"GET /attestation?nonce=ab HTTP/1.1": sniffEvidence,
		"HEAD /attestation ":                 sniffEvidence,
		"GET /attest":                        sniffMore,
		"GET /evidences/ HTTP/1.1":           sniffBackend,
		"GET /attestationX":                  sniffBackend,
	} {
		if got := l.sniff([]byte(in)); got != want {
			t.Errorf("sniff(%q) = %v, want %v", in, got, want)
		}
	}
	if !l.match("/attestation") || l.match("/evidences/quote.json") || l.match("/attestations") {
		t.Error("match disagrees with the configured roots")
	}
	for _, bad := range []string{"", "/", "attestation", "/a/b", "/a b", "/é"} {
		if err := checkLocalRoot(bad); err == nil {
			t.Errorf("root %q accepted", bad)
		}
	}
}
