// Package etcdtest runs a real etcd server in-process (etcd's own embed
// package) on loopback, for tests and the dev mode's replicas. It is never
// linked into the production build.
package etcdtest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// TLS makes the server speak TLS to clients and require a client
// certificate signed by CAFile.
type TLS struct {
	CertFile, KeyFile, CAFile string
}

// Server is one etcd member with its data directory.
type Server struct {
	tls       *TLS
	dir       string
	clientURL url.URL
	peerURL   url.URL
	etcd      *embed.Etcd
}

// Start runs etcd with its data in dir, on free loopback ports.
func Start(dir string) (*Server, error) { return StartTLS(dir, nil) }

// StartTLS is Start with client TLS and client-certificate authentication
// (nil: plain).
func StartTLS(dir string, t *TLS) (*Server, error) {
	cport, err := freePort()
	if err != nil {
		return nil, err
	}
	pport, err := freePort()
	if err != nil {
		return nil, err
	}
	scheme := "http"
	if t != nil {
		scheme = "https"
	}
	s := &Server{dir: dir, tls: t,
		clientURL: url.URL{Scheme: scheme, Host: fmt.Sprintf("127.0.0.1:%d", cport)},
		peerURL:   url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", pport)},
	}
	return s, s.start()
}

// Endpoint is the client URL, for clientv3.
func (s *Server) Endpoint() string { return s.clientURL.String() }

func (s *Server) start() error {
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = s.dir
	cfg.ListenClientUrls = []url.URL{s.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{s.clientURL}
	cfg.ListenPeerUrls = []url.URL{s.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{s.peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	if s.tls != nil {
		cfg.ClientTLSInfo = transport.TLSInfo{CertFile: s.tls.CertFile, KeyFile: s.tls.KeyFile,
			TrustedCAFile: s.tls.CAFile, ClientCertAuth: true}
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("etcdtest: starting etcd in %s: %w", s.dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		return errors.New("etcdtest: etcd not ready after 30 s")
	}
	s.etcd = e
	return nil
}

// Stop stops the server; its data stays for Restart.
func (s *Server) Stop() {
	if s.etcd != nil {
		s.etcd.Close()
		s.etcd = nil
	}
}

// Restart starts the stopped server again on the same ports and data.
func (s *Server) Restart() error {
	if s.etcd != nil {
		return errors.New("etcdtest: already running")
	}
	return s.start()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
