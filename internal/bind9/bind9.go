// Package bind9 runs a real BIND9 named on a loopback port, serving one
// primary zone that accepts TSIG-signed dynamic updates (RFC 2136) and zone
// transfers. Tests use it to exercise the rfc2136 provider against the server
// operators actually run; nothing here is a re-implementation of BIND.
package bind9

import (
	"context"
	"errors"
	"fmt"
	"github.com/tee-ingress/tee-ingress/internal/syncbuf"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// Defaults for Options.
const (
	DefaultKeyName = "tee-ingress."
	DefaultSecret  = "dGVlLWluZ3Jlc3MtdGVzdC10c2lnLXNlY3JldC0wMTI=" // base64 of 32 bytes, test only
)

// ErrNotInstalled is returned by Start when no named binary is found.
var ErrNotInstalled = errors.New("bind9: named is not installed (apt-get install bind9)")

// Options configure Start.
type Options struct {
	// Dir holds the configuration, zone file and journal. Required.
	Dir string
	// Zone is the zone served, without a trailing dot. Required.
	Zone string
	// ZoneFile is the zone's master file text; it must contain SOA and NS.
	// Required.
	ZoneFile string
	// KeyName and Secret are the hmac-sha256 TSIG key allowed to update and
	// transfer. Zero: DefaultKeyName, DefaultSecret.
	KeyName, Secret string
	// StartTimeout bounds the wait for named to answer. Zero: 20 s.
	StartTimeout time.Duration
}

// Server is a running named.
type Server struct {
	Addr    string // "127.0.0.1:port", UDP and TCP
	Zone    string
	KeyName string
	Secret  string

	cmd    *exec.Cmd
	exited chan error
	log    *syncbuf.Buffer
	once   sync.Once
}

// Start writes a configuration into opts.Dir, starts named in the foreground
// on a free loopback port and returns once it answers SOA for the zone.
func Start(opts Options) (*Server, error) {
	if opts.Dir == "" || opts.Zone == "" || opts.ZoneFile == "" {
		return nil, errors.New("bind9: Dir, Zone and ZoneFile are required")
	}
	if opts.KeyName == "" {
		opts.KeyName = DefaultKeyName
	}
	if opts.Secret == "" {
		opts.Secret = DefaultSecret
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 20 * time.Second
	}
	named, err := exec.LookPath("named")
	if err != nil {
		named = "/usr/sbin/named"
		if _, serr := os.Stat(named); serr != nil {
			return nil, ErrNotInstalled
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	conf := namedConf(opts, port)
	confPath := filepath.Join(opts.Dir, "named.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("bind9: writing config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(opts.Dir, "zone.db"), []byte(opts.ZoneFile), 0o600); err != nil {
		return nil, fmt.Errorf("bind9: writing zone: %w", err)
	}
	s := &Server{
		Addr: net.JoinHostPort("127.0.0.1", fmt.Sprint(port)), Zone: opts.Zone,
		KeyName: opts.KeyName, Secret: opts.Secret,
		exited: make(chan error, 1), log: &syncbuf.Buffer{},
	}
	s.cmd = exec.Command(named, "-g", "-4", "-n", "1", "-c", confPath)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bind9: starting named: %w", err)
	}
	go func() { s.exited <- s.cmd.Wait() }()

	if err := s.waitReady(opts.StartTimeout); err != nil {
		return nil, err
	}
	return s, nil
}

// namedConf is a primary for opts.Zone on 127.0.0.1:port that accepts
// updates and transfers signed with the TSIG key.
func namedConf(opts Options, port int) string {
	return fmt.Sprintf(`options {
	directory "%[1]s";
	pid-file "%[1]s/named.pid";
	session-keyfile "%[1]s/session.key";
	managed-keys-directory "%[1]s";
	listen-on port %[2]d { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	notify no;
	allow-query { any; };
};
controls { };
key "%[3]s" {
	algorithm hmac-sha256;
	secret "%[4]s";
};
zone "%[5]s" {
	type primary;
	file "%[1]s/zone.db";
	journal "%[1]s/zone.jnl";
	allow-update { key "%[3]s"; };
	allow-transfer { key "%[3]s"; };
};
`, opts.Dir, port, opts.KeyName, opts.Secret, opts.Zone)
}

// waitReady waits until named answers SOA for the zone, exits, or timeout
// passes (then it is stopped).
func (s *Server) waitReady(timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-s.exited:
			s.exited <- err
			return fmt.Errorf("bind9: named exited: %v\n%s", err, s.log.String())
		case <-deadline.C:
			s.Close()
			return fmt.Errorf("bind9: named did not answer SOA within %v:\n%s", timeout, s.log.String())
		case <-tick.C:
		}
		if s.answersSOA() {
			return nil
		}
	}
}

func (s *Server) answersSOA() bool {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(s.Zone), dns.TypeSOA)
	c := &dns.Client{Timeout: 500 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	r, _, err := c.ExchangeContext(ctx, m, s.Addr)
	return err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1
}

// Close stops named (SIGTERM, then SIGKILL after 10 s) and waits for it.
func (s *Server) Close() error {
	s.once.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(10 * time.Second)
		defer t.Stop()
		select {
		case err := <-s.exited:
			s.exited <- err
		case <-t.C:
			_ = s.cmd.Process.Kill()
			s.exited <- <-s.exited
		}
	})
	return nil
}

// Log is everything named printed.
func (s *Server) Log() string { return s.log.String() }

// freePort finds a port free for both TCP and UDP at the moment of asking.
func freePort() (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port, nil
		}
	}
	return 0, errors.New("bind9: no free loopback port")
}
