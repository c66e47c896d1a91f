package proxy

import "fmt"

// sniffResult is what the first bytes of a client stream say about it.
type sniffResult uint8

const (
	// sniffMore: the bytes so far are a strict prefix of an evidence request
	// line; only more bytes (or the backend speaking) can decide.
	sniffMore sniffResult = iota
	// sniffBackend: the bytes diverge from every evidence request line.
	sniffBackend
	// sniffEvidence: the bytes start an HTTP/1.x request for a local path
	// root (/evidences by default), or something under it.
	sniffEvidence
)

func (r sniffResult) String() string {
	switch r {
	case sniffMore:
		return "more"
	case sniffBackend:
		return "backend"
	case sniffEvidence:
		return "evidence"
	}
	return "invalid"
}

// localPaths are the path roots answered in-process (Config.LocalPaths).
type localPaths struct {
	roots []string // "/evidences"
}

// defaultLocal is Config.LocalPaths' zero value: the evidence bundle.
var defaultLocal = newLocalPaths([]string{"/evidences"})

func newLocalPaths(roots []string) localPaths { return localPaths{roots: roots} }

// checkLocalRoot accepts a single path segment: "/" then letters, digits,
// '.', '-' or '_'.
func checkLocalRoot(r string) error {
	if len(r) < 2 || r[0] != '/' {
		return fmt.Errorf("%q: want a path root like /evidences", r)
	}
	for _, c := range r[1:] {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("%q: want a single path segment like /evidences (letters, digits, . - _)", r)
		}
	}
	return nil
}

// sniff decides from the first bytes of a client stream whether it is an
// HTTP/1.x request for the evidence bundle (Config.LocalPaths' default).
func sniff(b []byte) sniffResult { return defaultLocal.sniff(b) }

// maxMethod bounds the method of a request line that may still turn out to
// be for a local path; no registered method is longer.
const maxMethod = 16

// sniff decides from the first bytes of a client stream whether it is an
// HTTP/1.x request for a local path, with any method: tcp mode then hands it
// to the same handler http mode uses, which answers what it does not serve
// (405 for POST) exactly as in http mode. It returns sniffMore only while b
// can still become such a request line (a method of capital letters, one
// space, then a prefix of a root), so a stream that is not one is decided at
// its first differing byte. The byte after the root must end the path
// segment (see endsSegment), so that /evidencesX reaches the backend.
func (l localPaths) sniff(b []byte) sniffResult {
	sp := 0
	for ; sp < len(b) && b[sp] != ' '; sp++ {
		if c := b[sp]; c < 'A' || c > 'Z' || sp == maxMethod {
			return sniffBackend
		}
	}
	switch {
	case sp == len(b):
		return sniffMore
	case sp == 0:
		return sniffBackend
	}
	target := b[sp+1:]
	more := false
	for _, root := range l.roots {
		n := min(len(target), len(root))
		if string(target[:n]) != root[:n] {
			continue
		}
		if len(target) <= len(root) {
			more = true
			continue
		}
		if endsSegment(target[len(root)]) {
			return sniffEvidence
		}
	}
	if more {
		return sniffMore
	}
	return sniffBackend
}

func endsSegment(c byte) bool { return c == '/' || c == '?' || c == ' ' }

// isEvidencePath reports whether an HTTP request path is the evidence root or
// under it (Config.LocalPaths' default).
func isEvidencePath(p string) bool { return defaultLocal.match(p) }

// match reports whether an HTTP request path is one of the roots or under one.
func (l localPaths) match(p string) bool {
	for _, root := range l.roots {
		if len(p) >= len(root) && p[:len(root)] == root && (len(p) == len(root) || p[len(root)] == '/') {
			return true
		}
	}
	return false
}
