package proxy

// sniffResult is what the first bytes of a client stream say about it.
type sniffResult uint8

const (
	// sniffMore: the bytes so far are a strict prefix of an evidence request
	// line; only more bytes (or the backend speaking) can decide.
	sniffMore sniffResult = iota
	// sniffBackend: the bytes diverge from every evidence request line.
	sniffBackend
	// sniffEvidence: the bytes start an HTTP/1.x request for /evidences,
	// /evidences/... or /evidences?...
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

// evidencePrefixes are the request-line starts served in-process. The byte that
// follows must end the path segment (see endsSegment), so that /evidencesX still
// reaches the backend.
var evidencePrefixes = [...]string{"GET /evidences", "HEAD /evidences"}

// maxSniff is the most bytes sniff needs to decide.
const maxSniff = len("HEAD /evidences") + 1

// sniff decides from the first bytes of a client stream whether it is an
// HTTP/1.x evidence request. It returns sniffMore only while b is a strict prefix
// of one of the evidence request lines, so a stream that is not one is decided
// at its first differing byte.
func sniff(b []byte) sniffResult {
	more := false
	for _, p := range evidencePrefixes {
		n := min(len(b), len(p))
		if string(b[:n]) != p[:n] {
			continue
		}
		if len(b) <= len(p) {
			more = true
			continue
		}
		if endsSegment(b[len(p)]) {
			return sniffEvidence
		}
	}
	if more {
		return sniffMore
	}
	return sniffBackend
}

func endsSegment(c byte) bool { return c == '/' || c == '?' || c == ' ' }

// isEvidencePath reports whether an HTTP request path is served by the evidence
// handler: /evidences or anything under /evidences/.
func isEvidencePath(p string) bool {
	const root = "/evidences"
	if len(p) < len(root) || p[:len(root)] != root {
		return false
	}
	return len(p) == len(root) || p[len(root)] == '/'
}
