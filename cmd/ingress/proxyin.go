package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// PROXY_PROTOCOL_IN: the dstack gateway sends a PROXY protocol header to an
// instance port when the app's compose says so (port_policy.ports[].pp), and
// the compose is measured: auto reads it back from the guest agent.

const (
	ppAuto = "auto"
	ppOn   = "on"
	ppOff  = "off"
)

func parseProxyProtocolIn(s *settings, c *Config) error {
	v, src := s.get("proxy-protocol-in")
	switch v = strings.ToLower(v); v {
	case ppAuto, ppOn, ppOff:
		c.ProxyProtocolIn = v
	case "true", "1", "yes":
		c.ProxyProtocolIn = ppOn
	case "false", "0", "no":
		c.ProxyProtocolIn = ppOff
	default:
		return bad(src, v, "auto, on or off")
	}
	from, src := s.get("proxy-protocol-from")
	for _, f := range splitList(from) {
		p, err := netip.ParsePrefix(f)
		if err != nil {
			if a, aerr := netip.ParseAddr(f); aerr == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			} else {
				return bad(src, f, "CIDRs or addresses, comma-separated, e.g. 10.0.0.0/8,fd00::/8")
			}
		}
		c.ProxyProtocolFrom = append(c.ProxyProtocolFrom, p.Masked())
	}
	if len(c.ProxyProtocolFrom) > 0 && c.ProxyProtocolIn == ppOff {
		return configErrorf("%s is set but PROXY_PROTOCOL_IN is off: no header is read", src)
	}
	return nil
}

// proxyProtocolIn decides whether the listener on port reads a PROXY header.
// auto asks the guest agent for the app compose; with no agent, or a compose
// that does not mark the port, no header is read (one would then fail the
// TLS handshake, as it always did).
func (d *daemon) proxyProtocolIn(ctx context.Context, port int) bool {
	switch d.cfg.ProxyProtocolIn {
	case ppOn:
		return true
	case ppOff:
		return false
	}
	pp, err := d.composeMarksPP(ctx, port)
	if err != nil {
		d.log.Warn("PROXY_PROTOCOL_IN=auto: the app compose could not be read, so no PROXY header is expected (set PROXY_PROTOCOL_IN=on or off to decide)", "err", err)
		return false
	}
	d.log.Info("PROXY_PROTOCOL_IN=auto", "port", port, "pp", pp, "from", "app compose port_policy")
	return pp
}

func (d *daemon) composeMarksPP(ctx context.Context, port int) (bool, error) {
	a, err := d.findAgent()
	if err != nil {
		return false, err
	}
	if a.Legacy() {
		return false, errors.New("only the legacy tappd socket was found; it does not report the compose")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	info, err := a.Info(ctx)
	if err != nil {
		return false, err
	}
	return portWantsPP(info.TCBInfo, port)
}

// portWantsPP reads tcb_info's app_compose (itself JSON text) and reports
// whether port_policy.ports marks port with pp: true.
func portWantsPP(tcbInfo string, port int) (bool, error) {
	var tcb struct {
		AppCompose string `json:"app_compose"`
	}
	if err := json.Unmarshal([]byte(tcbInfo), &tcb); err != nil {
		return false, fmt.Errorf("tcb_info is not JSON: %w", err)
	}
	if tcb.AppCompose == "" {
		return false, errors.New("tcb_info carries no app_compose (the app does not publish it)")
	}
	var compose struct {
		PortPolicy struct {
			Ports []struct {
				Port int  `json:"port"`
				PP   bool `json:"pp"`
			} `json:"ports"`
		} `json:"port_policy"`
	}
	if err := json.Unmarshal([]byte(tcb.AppCompose), &compose); err != nil {
		return false, fmt.Errorf("app_compose is not the JSON dstack writes: %w", err)
	}
	for _, p := range compose.PortPolicy.Ports {
		if p.Port == port {
			return p.PP, nil
		}
	}
	return false, nil
}
