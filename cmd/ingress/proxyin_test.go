package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/tee-ingress/tee-ingress/internal/agentsim"
)

// TestPortWantsPP: the compose's port_policy decides, for the listen port
// only; anything unreadable is an error, not a guess.
func TestPortWantsPP(t *testing.T) {
	tcb := func(compose string) string {
		b, _ := json.Marshal(map[string]string{"app_compose": compose, "mrtd": "00"})
		return string(b)
	}
	for _, tc := range []struct {
		name, tcb string
		port      int
		want      bool
		err       string
	}{
		{"marked", tcb(`{"port_policy":{"ports":[{"port":443,"pp":true}]}}`), 443, true, ""},
		{"other port marked", tcb(`{"port_policy":{"ports":[{"port":8443,"pp":true}]}}`), 443, false, ""},
		{"listed without pp", tcb(`{"port_policy":{"ports":[{"port":443}],"restrict_mode":true}}`), 443, false, ""},
		{"no policy", tcb(`{"manifest_version":2,"name":"app"}`), 443, false, ""},
		{"no compose", `{"mrtd":"00"}`, 443, false, "no app_compose"},
		{"compose not JSON", tcb(`services: {}`), 443, false, "not the JSON dstack writes"},
		{"tcb_info not JSON", `{`, 443, false, "tcb_info is not JSON"},
		{"pp not a bool", tcb(`{"port_policy":{"ports":[{"port":443,"pp":"yes"}]}}`), 443, false, "not the JSON dstack writes"},
	} {
		got, err := portWantsPP(tc.tcb, tc.port)
		if got != tc.want || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, %v; want %v, %q", tc.name, got, err, tc.want, tc.err)
		}
	}
}

// FuzzPortWantsPP: any tcb_info gives an answer or an error, never a panic,
// and pp is only ever true for a port the compose lists.
func FuzzPortWantsPP(f *testing.F) {
	f.Add(`{"app_compose":"{\"port_policy\":{\"ports\":[{\"port\":443,\"pp\":true}]}}"}`, 443)
	f.Add(`{"app_compose":"{}"}`, 1)
	f.Fuzz(func(t *testing.T, tcb string, port int) {
		pp, err := portWantsPP(tcb, port)
		if err != nil && pp {
			t.Fatal("pp with an error")
		}
		if pp && !strings.Contains(tcb, "pp") {
			t.Fatalf("pp for %q", tcb)
		}
	})
}

// TestProxyProtocolInAuto: with the simulator's compose marking the listen
// port pp, the ingress requires the gateway's PROXY v2 header and the
// backend sees the client it names; without the mark, the same header is
// TLS garbage and a plain client is served, as before.
func TestProxyProtocolInAuto(t *testing.T) {
	bin, _ := binaries(t)
	be := newBackend(t, "app")
	for _, marked := range []bool{true, false} {
		t.Run(fmt.Sprintf("pp=%v", marked), func(t *testing.T) {
			port := freePort(t)
			compose := fmt.Sprintf(`{"manifest_version":2,"name":"app","runner":"docker-compose","docker_compose_file":"services: {}","port_policy":{"ports":[{"port":%d,"pp":%v}]}}`, port, marked)
			_, sock, _ := newSimWith(t, agentsim.Config{ComposeJSON: []byte(compose)})
			p := startIngress(t, bin, map[string]string{"CERT_SOURCE": "self-signed", "TARGET_ENDPOINT": be.addr, "PROXY_MODE": "http",
				"DSTACK_SIMULATOR_ENDPOINT": sock, "METRICS_LISTEN": "127.0.0.1:0"}, "--listen", fmt.Sprintf("127.0.0.1:%d", port))
			addr, maddr := p.addr(), p.metricsAddr()
			p.waitReady()

			body, err := getAfter(addr, gatewayHeader(t, "203.0.113.7:40000"))
			if marked && (err != nil || !strings.HasSuffix(body, " xff=203.0.113.7")) {
				t.Fatalf("through the gateway: %q, %v\n%s", body, err, p.logs())
			}
			if !marked && err == nil {
				t.Fatalf("a PROXY header was taken where the compose asks for none: %q", body)
			}
			_, err = getAfter(addr, nil)
			if marked && err == nil {
				t.Fatal("a client without a PROXY header was served where the compose requires one")
			}
			if !marked && err != nil {
				t.Fatalf("plain client: %v", err)
			}
			if want := map[bool]string{true: "\ntee_ingress_proxy_header_refused_total 1\n", false: "\ntee_ingress_proxy_header_refused_total 0\n"}[marked]; !strings.Contains(scrape(t, maddr), want) {
				t.Errorf("metrics lack %q", strings.TrimSpace(want))
			}
		})
	}
}

// getAfter sends one request over TLS to addr, after header if there is one
// (what the gateway does on a pp port: a PROXY header, then the client's
// bytes).
func getAfter(addr string, header []byte) (string, error) {
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := raw.Write(header); err != nil {
		return "", err
	}
	c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err := c.Handshake(); err != nil {
		return "", err
	}
	io.WriteString(c, "GET /who HTTP/1.1\r\nHost: app\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// gatewayHeader is a PROXY v2 header naming client.
func gatewayHeader(t *testing.T, client string) []byte {
	t.Helper()
	h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(client)),
		net.TCPAddrFromAddrPort(netip.MustParseAddrPort("10.0.0.1:443")))
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
