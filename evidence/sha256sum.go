package evidence

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
)

// maxSumLines bounds sha256sum.txt: one line per configured domain plus three.
const maxSumLines = 1024

// SumLine is one line of sha256sum.txt.
type SumLine struct {
	Name   string
	SHA256 [32]byte
}

// EncodeSHA256Sum writes lines in GNU sha256sum's text format,
// "<64 lowercase hex><two spaces><name>\n" per line, in the given order.
func EncodeSHA256Sum(lines []SumLine) []byte {
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString(hex.EncodeToString(l.SHA256[:]))
		b.WriteString("  ")
		b.WriteString(l.Name)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// ParseSHA256Sum parses sha256sum.txt strictly: every line exactly
// "<64 lowercase hex><two spaces><name>\n" (GNU text mode; the binary-mode
// '*' and backslash-escaped names are refused), every name a bundle file
// name other than sha256sum.txt and quote.json (so no path separators), no
// name twice, at least one line. EncodeSHA256Sum of the result gives b back.
func ParseSHA256Sum(b []byte) ([]SumLine, error) {
	if len(b) == 0 {
		return nil, errors.New("parsing sha256sum.txt: empty; want lines \"<64 hex>  <name>\"")
	}
	if b[len(b)-1] != '\n' {
		return nil, errors.New("parsing sha256sum.txt: last line does not end with a newline")
	}
	var lines []SumLine
	seen := map[string]bool{}
	rest := b
	for n := 1; len(rest) > 0; n++ {
		if n > maxSumLines {
			return nil, fmt.Errorf("parsing sha256sum.txt: more than %d lines", maxSumLines)
		}
		i := bytes.IndexByte(rest, '\n')
		line := rest[:i]
		rest = rest[i+1:]
		if len(line) < 64+2+1 || line[64] != ' ' || line[65] != ' ' {
			return nil, fmt.Errorf("parsing sha256sum.txt: line %d: want \"<64 lowercase hex><two spaces><name>\", got %q", n, truncate(string(line)))
		}
		var l SumLine
		for _, c := range line[:64] {
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return nil, fmt.Errorf("parsing sha256sum.txt: line %d: the hash must be 64 lowercase hex characters, got %q", n, line[:64])
			}
		}
		hex.Decode(l.SHA256[:], line[:64])
		l.Name = string(line[66:])
		if !IsBundleFileName(l.Name) || l.Name == SHA256SumFile || l.Name == QuoteFile {
			return nil, fmt.Errorf("parsing sha256sum.txt: line %d: name %q is not a bundle file; accepted are %s, %s, %s and cert-<domain>.pem", n, truncate(l.Name), AccountFile, CertFile, HistoryFile)
		}
		if seen[l.Name] {
			return nil, fmt.Errorf("parsing sha256sum.txt: line %d: %s listed twice", n, l.Name)
		}
		seen[l.Name] = true
		lines = append(lines, l)
	}
	return lines, nil
}
