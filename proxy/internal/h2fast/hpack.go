package h2fast

// Response header blocks are written as HPACK literals without indexing
// (RFC 7541 6.2.2), :status from the static table where it is there. The
// encoder then has no state: a block can be made by its stream's goroutine
// without holding the connection, in any order, and the client's
// SETTINGS_HEADER_TABLE_SIZE never matters. A few bytes more per response
// than a dynamic table would give, for no lock and no allocation.

// staticStatus: RFC 7541 Appendix A's indexes for :status values.
var staticStatus = map[int]byte{200: 8, 204: 9, 206: 10, 304: 11, 400: 12, 404: 13, 500: 14}

func appendStatus(b []byte, status int) []byte {
	if i, ok := staticStatus[status]; ok {
		return append(b, 0x80|i)
	}
	// Literal without indexing, name :status (index 8), a 3-digit value.
	return append(b, 0x08, 3, byte('0'+status/100), byte('0'+status/10%10), byte('0'+status%10))
}

// appendInt appends v with an n-bit prefix whose high bits are first.
func appendInt(b []byte, first byte, n uint, v uint64) []byte {
	max := uint64(1)<<n - 1
	if v < max {
		return append(b, first|byte(v))
	}
	b = append(b, first|byte(max))
	for v -= max; v >= 128; v >>= 7 {
		b = append(b, byte(v&0x7f)|0x80)
	}
	return append(b, byte(v))
}

// appendField appends a literal field with a new name; name must be lower
// case already.
func appendField(b []byte, name, value string) []byte {
	b = append(b, 0)
	b = appendInt(b, 0, 7, uint64(len(name)))
	b = append(b, name...)
	b = appendInt(b, 0, 7, uint64(len(value)))
	return append(b, value...)
}

// appendFieldLower is appendField for a name in any case, as HTTP/1.1
// backends send them.
func appendFieldLower(b []byte, name, value []byte) []byte {
	b = append(b, 0)
	b = appendInt(b, 0, 7, uint64(len(name)))
	for _, ch := range name {
		if 'A' <= ch && ch <= 'Z' {
			ch += 'a' - 'A'
		}
		b = append(b, ch)
	}
	b = appendInt(b, 0, 7, uint64(len(value)))
	return append(b, value...)
}
