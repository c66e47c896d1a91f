package proxy

import (
	"context"
	"errors"
	"github.com/tee-ingress/tee-ingress/internal/fielderr"
	"strings"
	"testing"
	"time"
)

func TestNewRejectsBadConfig(t *testing.T) {
	f := newFixture(t)
	ok := Target{Addr: "app:80"}
	for _, tc := range []struct {
		cfg         Config
		field, want string
	}{
		{Config{Default: ok}, "Certs", "nil"},
		{Config{Certs: f.store}, "Default", "no backend (want Default or Routes set)"},
		{Config{Certs: f.store, Mode: 7, Default: ok}, "Mode", `Mode="7"`},
		{Config{Certs: f.store, Mode: ModeHTTP, Default: Target{Scheme: SchemeTCP, Addr: "db:5432"}}, "Default", "tcp:// targets need tcp mode"},
		{Config{Certs: f.store, Mode: ModeHTTP, Default: ok, ProxyProtocol: true}, "ProxyProtocol", "needs tcp mode"},
		{Config{Certs: f.store, Default: ok, ALPN: []string{"acme-tls/1"}}, "ALPN", "reserved for tls-alpn-01"},
		{Config{Certs: f.store, Default: ok, ALPN: []string{""}}, "ALPN", "1 to 255 bytes"},
		{Config{Certs: f.store, Mode: ModeHTTP, Default: ok, ALPN: []string{"spdy/3"}}, "ALPN", "h2 and/or http/1.1"},
		{Config{Certs: f.store, Default: ok, ClientTimeout: -time.Second}, "ClientTimeout", `ClientTimeout="-1s": negative`},
		{Config{Certs: f.store, Default: ok, MaxHeaderBytes: -1}, "MaxHeaderBytes", `MaxHeaderBytes="-1": negative`},
		{Config{Certs: f.store, Default: Target{Addr: "no-port"}}, "Default", `Default="no-port": backend "no-port": address no-port: missing port`},
		{Config{Certs: f.store, Routes: []Route{{Host: "*.*.x", Target: ok}}}, "Routes", "whole first label"},
		{Config{Certs: f.store, Routes: []Route{{Host: "a.test"}}}, "Routes", `Routes="a.test=": empty backend address`},
		{Config{Certs: f.store, Routes: []Route{{Host: "a.test", Target: ok}, {Host: "A.test", Target: ok}}}, "Routes", "routed twice"},
	} {
		_, err := New(tc.cfg)
		var fe *fielderr.Error
		if !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want a %s field error mentioning %q", tc.cfg, err, tc.field, tc.want)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	f := newFixture(t)
	s, err := New(Config{Certs: f.store, Default: Target{Addr: "app:80"}})
	mustf(t, err, "New")
	defer s.Shutdown(context.Background())
	c := s.cfg
	if c.MaxConns != DefaultMaxConns || c.HandshakeTimeout != DefaultHandshakeTimeout || c.ConnectTimeout != DefaultConnectTimeout ||
		c.ClientTimeout != DefaultClientTimeout || c.ServerTimeout != DefaultServerTimeout || c.HeaderTimeout != DefaultHeaderTimeout ||
		c.MaxHeaderBytes != DefaultMaxHeaderBytes || c.Logger == nil || c.ALPN != nil {
		t.Fatalf("defaults: %+v", c)
	}
	if s.tlsConf.MinVersion != 0x0303 || s.tlsConf.CurvePreferences != nil {
		t.Fatalf("TLS: min version %x, curves %v (want TLS 1.2 and Go's defaults, X25519MLKEM768 first)", s.tlsConf.MinVersion, s.tlsConf.CurvePreferences)
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"tcp": ModeTCP, "": ModeTCP, "HTTP": ModeHTTP, " http ": ModeHTTP} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseMode("l7"); err == nil || !strings.Contains(err.Error(), "want tcp or http") {
		t.Errorf("ParseMode(l7): %v", err)
	}
}
