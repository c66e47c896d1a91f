// Package h1 reads and writes the HTTP/1.1 message heads of http mode's fast
// path, and follows chunked bodies to find where they end. The parsers accept a strict subset of RFC 9112: anything else is "not plain", and the
// connection goes to net/http, which answers it as it always did (400, 431,
// 505...). Being strict here costs nothing in behaviour, and it keeps the
// framing we decide on identical to what we send: no request smuggling
// through a disagreement between us and the backend.
//
// Everything here works on byte slices of the caller's buffer and allocates
// nothing once a header slice has grown; FuzzParseRequestHead and
// FuzzParseResponseHead hold the parsers to net/http's reading of the same
// bytes.
package h1

import (
	"bytes"
	"errors"
	"strconv"
)

// Header is one header line: slices of the buffer the head was read into.
type Header struct {
	Name, Value []byte
	Drop        bool // not forwarded (hop-by-hop, or the proxy's to set)
}

// Request is a parsed request head.
type Request struct {
	Method, Target, Host []byte
	Path                 []byte // Target up to '?'
	ContentLength        int64  // -1: no body
	Close                bool   // Connection: close
	Headers              []Header
	// Reject, when set, is why the request is answered 400 and the
	// connection closed (RFC 9112 section 6.3: its body length cannot be
	// determined reliably). ok is then false too.
	Reject string
}

// Response is a parsed response head.
type Response struct {
	Status        int
	Reason        []byte
	HTTP10        bool
	ContentLength int64 // -1: not given
	Chunked       bool
	Close         bool // the backend will not take another request
	Headers       []Header
}

// HeadEnd returns the length of the head at the start of b, blank line
// included, or -1 when b does not hold all of it yet. A line may end in LF
// alone; the parsers then refuse the head, but it is complete.
func HeadEnd(b []byte) int {
	i := 0
	for {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		line := b[i : i+j]
		i += j + 1
		if len(line) == 0 || len(line) == 1 && line[0] == '\r' {
			// A blank first line ends a head too: not plain, net/http skips it.
			return i
		}
	}
}

// nextLine returns the line at the start of b without its CRLF, and the
// rest; ok is false when the line does not end in CRLF or holds a bare CR.
func nextLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' {
		return nil, nil, false
	}
	line = b[:i-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, nil, false
	}
	return line, b[i+1:], true
}

// tokenChars marks the bytes of an RFC 9110 token.
var tokenChars = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenChars[c] {
			return false
		}
	}
	return true
}

// isFieldValue: visible ASCII, obs-text, space and tab; no other controls.
func isFieldValue(b []byte) bool {
	for _, c := range b {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// parseHeaders reads header lines up to the blank line that ends head.
func parseHeaders(b []byte, hdrs []Header) ([]Header, bool) {
	for {
		line, rest, ok := nextLine(b)
		if !ok {
			return hdrs, false
		}
		b = rest
		if len(line) == 0 {
			return hdrs, len(b) == 0
		}
		if line[0] == ' ' || line[0] == '\t' {
			return hdrs, false // obs-fold
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 || !isToken(line[:colon]) {
			return hdrs, false // no name, or space before the colon
		}
		v := trimOWS(line[colon+1:])
		if !isFieldValue(v) {
			return hdrs, false
		}
		hdrs = append(hdrs, Header{Name: line[:colon], Value: v})
	}
}

// parseContentLength accepts only digits, and no more than fit an int64.
func parseContentLength(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// pathChars are the bytes net/http leaves as they are in a path (RFC 3986's
// pchar without '%', plus '[' and ']'): unreserved, sub-delims, ':', '@',
// '/'. net/http percent-encodes any other (a '"' becomes %22) when it
// forwards, so a path holding one is not plain: the two would differ.
var pathChars = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-._~!$&'()*+,;=:@/[]" {
		t[c] = true
	}
	return t
}()

// plainTarget: origin-form, visible ASCII, valid %-escapes; no '%' in the
// path (net/http decodes it before matching local paths, so the decision is
// left to it) and only pathChars there, no fragment, no ';' in the query
// (ReverseProxy rewrites such queries).
func plainTarget(t []byte) (path []byte, ok bool) {
	if len(t) == 0 || t[0] != '/' {
		return nil, false
	}
	q := len(t)
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch {
		case c <= ' ' || c >= 0x7f || c == '#':
			return nil, false
		case c == '?':
			if q == len(t) {
				q = i
			}
		case i < q && c != '%' && !pathChars[c]:
			return nil, false
		case c == '%':
			if i < q || i+2 >= len(t) || unhex(t[i+1]) < 0 || unhex(t[i+2]) < 0 {
				return nil, false
			}
		case c == ';':
			if i > q {
				return nil, false
			}
		}
	}
	return t[:q], true
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// ValidHost: what a Host header may hold (reg-name, IPv4, [IPv6], port).
func ValidHost(h []byte) bool {
	if len(h) == 0 {
		return false
	}
	for _, c := range h {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case bytes.IndexByte([]byte("-._~:[]!$&'()*+,;=%"), c) >= 0:
		default:
			return false
		}
	}
	return true
}

// equalFold compares an ASCII header name with a lower-case constant.
func equalFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// eachToken calls fn with each comma-separated element of a list value.
func eachToken(v []byte, fn func([]byte) bool) bool {
	for len(v) > 0 {
		var el []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			el, v = v[:i], v[i+1:]
		} else {
			el, v = v, nil
		}
		if el = trimOWS(el); len(el) > 0 && !fn(el) {
			return false
		}
	}
	return true
}

// Dropped reports whether a request header named name is never forwarded:
// hop-by-hop, or the proxy's to set (as ReverseProxy drops them). Both fast
// paths, HTTP/1.1 and HTTP/2, drop by this one rule.
func Dropped(name []byte) bool {
	switch {
	case equalFold(name, "keep-alive"), equalFold(name, "proxy-connection"),
		equalFold(name, "proxy-authenticate"), equalFold(name, "proxy-authorization"),
		equalFold(name, "x-forwarded-for"), equalFold(name, "x-forwarded-host"),
		equalFold(name, "x-forwarded-proto"), equalFold(name, "forwarded"), equalFold(name, "x-real-ip"):
		return true
	}
	return false
}

// ParseRequestHead parses a complete head (HeadEnd's length). ok is false
// for anything outside the plain subset: absolute-form or asterisk targets,
// versions other than HTTP/1.1, CONNECT, upgrades, Expect, Transfer-Encoding
// (chunked request bodies go to net/http too), TE, Trailer, a missing,
// repeated or malformed Host, a repeated or malformed Content-Length, and
// Connection options other than close and keep-alive.
func ParseRequestHead(head []byte, hdrs []Header) (req Request, ok bool) {
	line, rest, ok := nextLine(head)
	if !ok {
		return req, false
	}
	sp := bytes.IndexByte(line, ' ')
	if sp < 0 {
		return req, false
	}
	req.Method = line[:sp]
	line = line[sp+1:]
	sp = bytes.IndexByte(line, ' ')
	if sp < 0 || string(line[sp+1:]) != "HTTP/1.1" {
		return req, false
	}
	req.Target = line[:sp]
	if !isToken(req.Method) || string(req.Method) == "CONNECT" || string(req.Method) == "PRI" {
		return req, false
	}
	if req.Path, ok = plainTarget(req.Target); !ok {
		return req, false
	}
	if req.Headers, ok = parseHeaders(rest, hdrs[:0]); !ok {
		return req, false
	}
	req.ContentLength = -1
	hosts, clCount := 0, 0
	notPlain := false
	var lastCoding []byte // the last transfer coding, over every Transfer-Encoding line
	for i := range req.Headers {
		h := &req.Headers[i]
		n := h.Name
		switch {
		case equalFold(n, "host"):
			hosts++
			req.Host = h.Value
			h.Drop = true // written first, as the Transport does
		case equalFold(n, "content-length"):
			clCount++
			if clCount > 1 {
				notPlain = true // net/http takes repeated equal values
				continue
			}
			if req.ContentLength, ok = parseContentLength(h.Value); !ok {
				return req, false
			}
		case equalFold(n, "transfer-encoding"):
			notPlain = true // chunked request bodies go to net/http
			eachToken(h.Value, func(t []byte) bool { lastCoding = t; return true })
			if lastCoding == nil {
				lastCoding = []byte{}
			}
		case equalFold(n, "connection"):
			h.Drop = true
			if !eachToken(h.Value, func(t []byte) bool {
				switch {
				case equalFold(t, "close"):
					req.Close = true
				case equalFold(t, "keep-alive"):
				default:
					return false
				}
				return true
			}) {
				return req, false
			}
		case equalFold(n, "upgrade"), equalFold(n, "expect"),
			equalFold(n, "te"), equalFold(n, "trailer"), equalFold(n, "http2-settings"):
			notPlain = true
		case Dropped(n):
			h.Drop = true
		}
	}
	// RFC 9112 section 6.3: with both framings, or a coding after chunked,
	// the end of the body is ambiguous between us and whatever sent it.
	switch {
	case lastCoding != nil && clCount > 0:
		req.Reject = "both Content-Length and Transfer-Encoding"
		return req, false
	case lastCoding != nil && !equalFold(lastCoding, "chunked"):
		req.Reject = "a Transfer-Encoding whose last coding is not chunked"
		return req, false
	}
	if notPlain || hosts != 1 || !ValidHost(req.Host) {
		return req, false
	}
	return req, true
}

// ParseResponseHead parses a backend's response head; ok is false when it is
// malformed or its framing is ambiguous (the client then gets 502).
func ParseResponseHead(head []byte, hdrs []Header) (resp Response, ok bool) {
	line, rest, ok := nextLine(head)
	if !ok || len(line) < 12 {
		return resp, false
	}
	switch string(line[:9]) {
	case "HTTP/1.1 ":
	case "HTTP/1.0 ":
		resp.HTTP10 = true
	default:
		return resp, false
	}
	code := line[9:12]
	if code[0] < '1' || code[0] > '5' || code[1] < '0' || code[1] > '9' || code[2] < '0' || code[2] > '9' {
		return resp, false
	}
	resp.Status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	if len(line) > 12 {
		if line[12] != ' ' || !isFieldValue(line[13:]) {
			return resp, false
		}
		resp.Reason = line[13:]
	}
	if resp.Headers, ok = parseHeaders(rest, hdrs[:0]); !ok {
		return resp, false
	}
	resp.ContentLength = -1
	keepAlive := false
	for i := range resp.Headers {
		h := &resp.Headers[i]
		n := h.Name
		switch {
		case equalFold(n, "content-length"):
			cl, ok := parseContentLength(h.Value)
			if !ok || resp.ContentLength >= 0 && cl != resp.ContentLength {
				return resp, false
			}
			if resp.ContentLength >= 0 {
				h.Drop = true // an identical repeat
			}
			resp.ContentLength = cl
		case equalFold(n, "transfer-encoding"):
			if resp.Chunked || !equalFold(h.Value, "chunked") {
				return resp, false // codings we would have to undo
			}
			resp.Chunked = true
		case equalFold(n, "connection"):
			h.Drop = true
			eachToken(h.Value, func(t []byte) bool {
				if equalFold(t, "close") {
					resp.Close = true
				} else if equalFold(t, "keep-alive") {
					keepAlive = true
				}
				return true
			})
		case equalFold(n, "keep-alive"), equalFold(n, "proxy-connection"), equalFold(n, "upgrade"),
			equalFold(n, "te"), equalFold(n, "proxy-authenticate"):
			h.Drop = true
		}
	}
	if resp.Chunked && resp.HTTP10 {
		return resp, false // RFC 9112 6.1: faulty; net/http would read it until the close
	}
	if resp.Chunked && resp.ContentLength >= 0 {
		// Transfer-Encoding wins (RFC 9112 6.3); the length is not sent on.
		for i := range resp.Headers {
			if equalFold(resp.Headers[i].Name, "content-length") {
				resp.Headers[i].Drop = true
			}
		}
		resp.ContentLength = -1
	}
	if resp.HTTP10 && !keepAlive {
		resp.Close = true
	}
	return resp, true
}

// NoBody reports whether a response to method with status has no body,
// whatever its headers say.
func NoBody(method []byte, status int) bool {
	return status/100 == 1 || status == 204 || status == 304 || string(method) == "HEAD"
}

// ChunkedReader follows a chunked body as its bytes stream past, to find
// where it ends; the bytes themselves are forwarded as they are.
type ChunkedReader struct {
	state int
	size  int64 // bytes left in the current chunk's data
	line  int   // length of the size or trailer line so far
	digit bool  // a hex digit was seen on the size line
	ext   bool  // past the chunk size, in extensions
	data  int64 // chunk-data bytes seen: the body without its framing
}

const (
	chSize = iota
	chSizeLF
	chData
	chDataCR
	chDataLF
	chTrailer
	chTrailerLF
	chDone
)

// maxChunkLine bounds a chunk-size or trailer line.
const maxChunkLine = 4096

// Data is how many chunk-data bytes were seen: the body without its framing.
func (c *ChunkedReader) Data() int64 { return c.data }

// Feed consumes b; it returns how many bytes belong to the body (less than
// len(b) only when the body ended) and whether the body is complete. An
// error means the body is malformed.
func (c *ChunkedReader) Feed(b []byte) (int, bool, error) { return c.FeedData(b, nil) }

// FeedData is Feed that also passes each run of chunk data in b to data
// (nil: none), for a reader that takes the framing off.
func (c *ChunkedReader) FeedData(b []byte, data func([]byte)) (int, bool, error) {
	for i := 0; i < len(b); i++ {
		ch := b[i]
		switch c.state {
		case chSize:
			c.line++
			if c.line > maxChunkLine {
				return i, false, errChunked
			}
			switch {
			case ch == '\r':
				if !c.digit {
					return i, false, errChunked
				}
				c.state = chSizeLF
			case c.ext:
				if ch < 0x20 && ch != '\t' || ch == 0x7f {
					return i, false, errChunked
				}
			case unhex(ch) >= 0:
				if c.size >= 1<<55 { // a chunk of 2^59 bytes or more
					return i, false, errChunked
				}
				c.size = c.size<<4 | int64(unhex(ch))
				c.digit = true
			case ch == ';' || ch == ' ' || ch == '\t':
				if !c.digit {
					return i, false, errChunked
				}
				c.ext = true
			default:
				return i, false, errChunked
			}
		case chSizeLF:
			if ch != '\n' {
				return i, false, errChunked
			}
			c.line, c.digit, c.ext = 0, false, false
			if c.size == 0 {
				c.state = chTrailer
			} else {
				c.state = chData
			}
		case chData:
			n := min(int64(len(b)-i), c.size)
			if data != nil {
				data(b[i : i+int(n)])
			}
			c.size -= n
			c.data += n
			i += int(n) - 1
			if c.size == 0 {
				c.state = chDataCR
			}
		case chDataCR:
			if ch != '\r' {
				return i, false, errChunked
			}
			c.state = chDataLF
		case chDataLF:
			if ch != '\n' {
				return i, false, errChunked
			}
			c.state = chSize
		case chTrailer:
			switch {
			case ch == '\r':
				c.state = chTrailerLF
			case ch < 0x20 && ch != '\t' || ch == 0x7f:
				return i, false, errChunked
			default:
				c.line++
				if c.line > maxChunkLine {
					return i, false, errChunked
				}
			}
		case chTrailerLF:
			if ch != '\n' {
				return i, false, errChunked
			}
			if c.line == 0 {
				c.state = chDone
				return i + 1, true, nil
			}
			c.line = 0
			c.state = chTrailer
		}
	}
	return len(b), false, nil
}

var errChunked = errors.New("malformed chunked encoding from the backend")

// AppendStatusLine writes "HTTP/1.1 <status> <reason>\r\n".
func AppendStatusLine(b []byte, status int, reason []byte) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, reason...)
	return append(b, "\r\n"...)
}

// AppendForwarded appends the fields the proxy sets on every request it
// forwards: the client's address (ip, when known) in X-Forwarded-For and
// X-Real-IP, the host the client asked for, and the scheme it used. Both
// fast paths write them so.
func AppendForwarded[S string | []byte](b []byte, ip string, host S) []byte {
	if ip != "" {
		b = append(b, "X-Forwarded-For: "...)
		b = append(b, ip...)
		b = append(b, "\r\nX-Real-IP: "...)
		b = append(b, ip...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "X-Forwarded-Host: "...)
	b = append(b, host...)
	return append(b, "\r\nX-Forwarded-Proto: https\r\n"...)
}

// AppendHeader appends one header line.
func AppendHeader(b []byte, hd Header) []byte {
	b = append(b, hd.Name...)
	b = append(b, ": "...)
	b = append(b, hd.Value...)
	return append(b, "\r\n"...)
}
