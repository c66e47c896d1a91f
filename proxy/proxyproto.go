package proxy

import (
	"crypto/tls"
	"fmt"
	"net"

	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"
)

// proxyHeader builds the PROXY protocol v2 header for a backend connection:
// the client's address as source, our listening address as destination, the
// SNI as PP2_TYPE_AUTHORITY and the TLS facts as PP2_TYPE_SSL (the client used
// TLS, presented no certificate, version and cipher).
func proxyHeader(client, local net.Addr, st *tls.ConnectionState) ([]byte, error) {
	h := proxyproto.HeaderProxyFromAddrs(2, client, local)
	if src, ok := client.(*net.TCPAddr); ok {
		if dst, ok := local.(*net.TCPAddr); ok {
			// One family for both addresses: an IPv4 client on a dual-stack
			// listener is sent as an IPv4-mapped IPv6 address.
			h.TransportProtocol = proxyproto.TCPv6
			s4, d4 := src.IP.To4(), dst.IP.To4()
			if s4 != nil && d4 != nil {
				h.TransportProtocol = proxyproto.TCPv4
				src = &net.TCPAddr{IP: s4, Port: src.Port}
				dst = &net.TCPAddr{IP: d4, Port: dst.Port}
			} else {
				src = &net.TCPAddr{IP: src.IP.To16(), Port: src.Port}
				dst = &net.TCPAddr{IP: dst.IP.To16(), Port: dst.Port}
			}
			h.Command, h.SourceAddr, h.DestinationAddr = proxyproto.PROXY, src, dst
		}
	}
	var tlvs []proxyproto.TLV
	if st != nil {
		if st.ServerName != "" {
			tlvs = append(tlvs, proxyproto.TLV{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte(st.ServerName)})
		}
		ssl, err := tlvparse.PP2SSL{
			Client: tlvparse.PP2_BITFIELD_CLIENT_SSL,
			Verify: 1, // no client certificate was verified
			TLV: []proxyproto.TLV{
				{Type: proxyproto.PP2_SUBTYPE_SSL_VERSION, Value: []byte(tlsVersionName(st.Version))},
				{Type: proxyproto.PP2_SUBTYPE_SSL_CIPHER, Value: []byte(tls.CipherSuiteName(st.CipherSuite))},
			},
		}.Marshal()
		if err != nil {
			return nil, fmt.Errorf("building PROXY header: %w", err)
		}
		tlvs = append(tlvs, ssl)
	}
	if err := h.SetTLVs(tlvs); err != nil {
		return nil, fmt.Errorf("building PROXY header: %w", err)
	}
	b, err := h.Format()
	if err != nil {
		return nil, fmt.Errorf("building PROXY header for %v -> %v: %w", client, local, err)
	}
	return b, nil
}

// tlsVersionName spells versions as OpenSSL (and so HAProxy) does, which is
// what PROXY protocol consumers expect in PP2_SUBTYPE_SSL_VERSION.
func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return tls.VersionName(v)
}
