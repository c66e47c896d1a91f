package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"

	"github.com/pires/go-proxyproto"
)

// The inbound PROXY protocol header (Config.ProxyProtocolIn). It is read
// byte-exact from the socket, never ahead: the TLS handshake and the raw
// socket I/O after it must start at the first byte that follows it. The
// bytes are then parsed by go-proxyproto.

const (
	// maxV1Header is the longest v1 line (the spec's 107 bytes).
	maxV1Header = 107
	// maxV2Body bounds the addresses and TLVs of a v2 header. The gateway
	// sends addresses and a few TLVs; 4 KiB leaves room without letting a
	// peer make us buffer 64 KiB.
	maxV2Body = 4 << 10
)

// readProxyHeader reads the header at the start of c and makes its source
// the connection's client address. The caller has set c's deadline.
func (s *Server) readProxyHeader(c *trackedConn) error {
	if len(s.cfg.ProxyProtocolFrom) > 0 && !peerAllowed(c.Conn.RemoteAddr(), s.cfg.ProxyProtocolFrom) {
		return errors.New("this peer may not send a PROXY header (not in the allowed sources)")
	}
	raw, err := readHeaderBytes(c.Conn)
	if err != nil {
		return err
	}
	src, err := parseProxyHeader(raw)
	if err != nil {
		return err
	}
	if src != nil {
		c.client = src
	}
	return nil
}

func peerAllowed(a net.Addr, from []netip.Prefix) bool {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip, ok := netip.AddrFromSlice(tcp.IP)
	if !ok {
		return false
	}
	ip = ip.Unmap()
	for _, p := range from {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// readHeaderBytes reads exactly one v1 or v2 header from r.
func readHeaderBytes(r io.Reader) ([]byte, error) {
	b := make([]byte, 16, 16+64)
	if _, err := io.ReadFull(r, b[:6]); err != nil {
		return nil, fmt.Errorf("reading the PROXY header: %w", err)
	}
	if bytes.Equal(b[:5], proxyproto.SIGV1) && b[5] == ' ' {
		return readV1(r, b[:6])
	}
	if !bytes.Equal(b[:6], proxyproto.SIGV2[:6]) {
		return nil, fmt.Errorf("no PROXY header: the connection starts with %q (want a PROXY protocol v2 or v1 header first)", b[:6])
	}
	if _, err := io.ReadFull(r, b[6:16]); err != nil {
		return nil, fmt.Errorf("reading the PROXY v2 header: %w", err)
	}
	if !bytes.Equal(b[:12], proxyproto.SIGV2) {
		return nil, errors.New("malformed PROXY v2 signature")
	}
	n := int(b[14])<<8 | int(b[15])
	if n > maxV2Body {
		return nil, fmt.Errorf("PROXY v2 header of %d bytes (at most %d accepted)", n, maxV2Body)
	}
	b = append(b, make([]byte, n)...)
	if _, err := io.ReadFull(r, b[16:]); err != nil {
		return nil, fmt.Errorf("reading the PROXY v2 header: %w", err)
	}
	return b, nil
}

// readV1 reads the rest of a v1 line a byte at a time (v1 is for old
// senders; the gateway speaks v2).
func readV1(r io.Reader, b []byte) ([]byte, error) {
	var one [1]byte
	for len(b) < maxV1Header {
		if _, err := io.ReadFull(r, one[:]); err != nil {
			return nil, fmt.Errorf("reading the PROXY v1 header: %w", err)
		}
		b = append(b, one[0])
		if bytes.HasSuffix(b, []byte("\r\n")) {
			return b, nil
		}
	}
	return nil, fmt.Errorf("PROXY v1 header longer than %d bytes", maxV1Header)
}

// parseProxyHeader returns the client address raw names, or nil when it
// names none (a LOCAL command, as a sender's own health check sends, or
// an UNKNOWN protocol): the peer's address stands.
func parseProxyHeader(raw []byte) (net.Addr, error) {
	h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		return nil, fmt.Errorf("malformed PROXY header: %w", err)
	}
	if h.Command != proxyproto.PROXY || !h.TransportProtocol.IsStream() {
		return nil, nil
	}
	src, ok := h.SourceAddr.(*net.TCPAddr)
	if !ok || src.IP == nil {
		return nil, errors.New("PROXY header without a TCP source address")
	}
	return src, nil
}
