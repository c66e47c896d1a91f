package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"net"
	"testing"

	"github.com/pires/go-proxyproto"
)

func FuzzProxyHeader(f *testing.F) {
	f.Add([]byte{127, 0, 0, 1}, uint16(40000), []byte{127, 0, 0, 2}, uint16(443), "app.test", uint16(tls.VersionTLS13))
	f.Add([]byte(net.ParseIP("2001:db8::1")), uint16(1), []byte(net.ParseIP("::1")), uint16(65535), "", uint16(tls.VersionTLS12))
	f.Fuzz(func(t *testing.T, srcIP []byte, srcPort uint16, dstIP []byte, dstPort uint16, sni string, version uint16) {
		if len(srcIP) != 4 && len(srcIP) != 16 || len(dstIP) != len(srcIP) || len(sni) > 255 {
			return // not what a TCP accept and a TLS handshake can produce
		}
		src := &net.TCPAddr{IP: srcIP, Port: int(srcPort)}
		dst := &net.TCPAddr{IP: dstIP, Port: int(dstPort)}
		st := &tls.ConnectionState{ServerName: sni, Version: version, CipherSuite: tls.TLS_AES_128_GCM_SHA256}
		hdr, err := proxyHeader(src, dst, st)
		if err != nil {
			t.Fatalf("proxyHeader(%v, %v, %q): %v", src, dst, sni, err)
		}
		// A backend parsing the header with go-proxyproto gets back what we put
		// in, and nothing of the stream after it is consumed.
		br := bufio.NewReader(bytes.NewReader(append(hdr, "next"...)))
		h, err := proxyproto.Read(br)
		if err != nil {
			t.Fatalf("parsing our header %x: %v", hdr, err)
		}
		gs, gd, ok := h.TCPAddrs()
		if !ok || !gs.IP.Equal(src.IP) || gs.Port != src.Port || !gd.IP.Equal(dst.IP) || gd.Port != dst.Port {
			t.Fatalf("addresses %v -> %v, want %v -> %v", gs, gd, src, dst)
		}
		tlvs, err := h.TLVs()
		if err != nil {
			t.Fatal(err)
		}
		var authority []byte
		for _, tlv := range tlvs {
			if tlv.Type == proxyproto.PP2_TYPE_AUTHORITY {
				authority = tlv.Value
			}
		}
		if string(authority) != sni {
			t.Fatalf("authority %q, want %q", authority, sni)
		}
		if rest, _ := br.Peek(4); string(rest) != "next" {
			t.Fatalf("stream after header: %q", rest)
		}
	})
}
