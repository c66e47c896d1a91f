package main

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/tee-ingress/tee-ingress/acme"
	"github.com/tee-ingress/tee-ingress/clusterstore"
	"github.com/tee-ingress/tee-ingress/internal/fielderr"
)

// ClusterConfig is CLUSTER_*: the store the replicas of the app share. The
// zero value means a single instance.
type ClusterConfig struct {
	// Endpoints are etcd client URLs (http:// or, with TLS, https://).
	Endpoints []string
	// Prefix of every key; "" means /tee-ingress/<app_id>/.
	Prefix string
	// TLS for etcd; nil means plain connections.
	TLS *tls.Config
	// Username and Password authenticate to etcd; "" means none.
	Username, Password string
}

// Enabled says whether replicas share a store.
func (c ClusterConfig) Enabled() bool { return len(c.Endpoints) > 0 }

// clusterKeyPath is the dstack KMS path of the sealing key: every instance
// of the app derives the same key from it, no other app can.
const clusterKeyPath = "tee-ingress/cluster/v1"

func parseCluster(s *settings, c *Config) error {
	v, src := s.get("cluster-store")
	if v == "" {
		for _, name := range []string{"cluster-prefix", "CLUSTER_ETCD_CA", "CLUSTER_ETCD_CERT", "CLUSTER_ETCD_KEY", "CLUSTER_ETCD_USER", "CLUSTER_ETCD_PASSWORD"} {
			if s.given(name) {
				_, nsrc := s.get(name)
				return configErrorf("%s is set but CLUSTER_STORE is not: set CLUSTER_STORE=etcd://host:2379 or unset it", nsrc)
			}
		}
		return nil
	}
	if c.CertSource != sourceACME {
		return configErrorf("%s is set but CERT_SOURCE is %s: replicas share ACME certificates only (use CERT_SOURCE=acme)", src, c.CertSource)
	}
	if c.AccountKey == keyFile {
		return configErrorf("%s is set with ACME_ACCOUNT_KEY=file: replicas must share one ACME account, so use ACME_ACCOUNT_KEY=kms (or auto)", src)
	}
	rest, ok := strings.CutPrefix(v, "etcd://")
	if !ok {
		return bad(src, v, "etcd://host:port[,host:port...]")
	}
	cc := ClusterConfig{}
	var tlsCfg *tls.Config
	if err := clusterTLS(s, &tlsCfg); err != nil {
		return err
	}
	scheme := "http://"
	if tlsCfg != nil {
		scheme = "https://"
	}
	for _, hp := range strings.Split(rest, ",") {
		hp = strings.TrimSpace(hp)
		if err := checkHostPort(hp); err != nil || strings.HasPrefix(hp, ":") {
			return bad(src, v, "etcd://host:port[,host:port...]")
		}
		cc.Endpoints = append(cc.Endpoints, scheme+hp)
	}
	cc.TLS = tlsCfg
	if p, psrc := s.get("cluster-prefix"); p != "" {
		if !strings.HasPrefix(p, "/") || !strings.HasSuffix(p, "/") || strings.Contains(p, "//") {
			return bad(psrc, p, "a key prefix that starts and ends with /, like /tee-ingress/myapp/")
		}
		cc.Prefix = p
	}
	cc.Username, _ = s.get("CLUSTER_ETCD_USER")
	cc.Password, _ = s.get("CLUSTER_ETCD_PASSWORD")
	if (cc.Username == "") != (cc.Password == "") {
		return configErrorf("CLUSTER_ETCD_USER and CLUSTER_ETCD_PASSWORD go together: set both or neither")
	}
	c.Cluster = cc
	return nil
}

func clusterTLS(s *settings, out **tls.Config) error {
	ca, caSrc := s.get("CLUSTER_ETCD_CA")
	cert, _ := s.get("CLUSTER_ETCD_CERT")
	key, _ := s.get("CLUSTER_ETCD_KEY")
	if (cert == "") != (key == "") {
		return configErrorf("CLUSTER_ETCD_CERT and CLUSTER_ETCD_KEY go together: set both (client certificate and key, PEM) or neither")
	}
	if ca == "" && cert == "" {
		return nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return configErrorf("%s=%s cannot be read: %s", caSrc, ca, errors.Unwrap(err))
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return bad(caSrc, ca, "a file of PEM CERTIFICATE blocks (etcd's CA)")
		}
		cfg.RootCAs = pool
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return configErrorf("CLUSTER_ETCD_CERT=%s and CLUSTER_ETCD_KEY=%s do not load as a pair: %s", cert, key, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	*out = cfg
	return nil
}

// sharedStore is the cluster store, opened once the guest agent has told
// this instance who it is (the key prefix, its name and the sealing key
// come from there). Calls made before wait for it, or for their context.
type sharedStore struct {
	once  sync.Once
	ready chan struct{}
	s     *clusterstore.Store
}

var _ acme.SharedStore = (*sharedStore)(nil)

func newSharedStore() *sharedStore { return &sharedStore{ready: make(chan struct{})} }

func (l *sharedStore) set(s *clusterstore.Store) {
	l.once.Do(func() { l.s = s; close(l.ready) })
}

func (l *sharedStore) wait(ctx context.Context) (*clusterstore.Store, error) {
	select {
	case <-l.ready:
		return l.s, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("shared store not open yet (waiting for the dstack guest agent): %w", ctx.Err())
	}
}

// opened returns the store if it is open, else nil.
func (l *sharedStore) opened() *clusterstore.Store {
	select {
	case <-l.ready:
		return l.s
	default:
		return nil
	}
}

func (l *sharedStore) Get(ctx context.Context, key string) ([]byte, int64, error) {
	s, err := l.wait(ctx)
	if err != nil {
		return nil, 0, err
	}
	return s.Get(ctx, key)
}

func (l *sharedStore) CompareAndSwap(ctx context.Context, key string, data []byte, version int64) error {
	s, err := l.wait(ctx)
	if err != nil {
		return err
	}
	return s.CompareAndSwap(ctx, key, data, version)
}

func (l *sharedStore) Lock(ctx context.Context, name string) (acme.StoreLock, error) {
	s, err := l.wait(ctx)
	if err != nil {
		return nil, err
	}
	return s.Lock(ctx, name)
}

func (l *sharedStore) Watch(ctx context.Context, prefix string) <-chan acme.StoreEvent {
	s, err := l.wait(ctx)
	if err != nil {
		ch := make(chan acme.StoreEvent)
		close(ch)
		return ch
	}
	return s.Watch(ctx, prefix)
}

func (l *sharedStore) Members(ctx context.Context) ([]string, error) {
	s, err := l.wait(ctx)
	if err != nil {
		return nil, err
	}
	return s.Members(ctx)
}

func (l *sharedStore) Self() string {
	if s := l.opened(); s != nil {
		return s.Self()
	}
	return ""
}

// openCluster derives the sealing key and opens the store, as this
// instance of this app.
func (d *daemon) openCluster(ctx context.Context) error {
	a := d.getAgent()
	d.mu.Lock()
	info := d.info
	d.mu.Unlock()
	if a == nil || info == nil {
		return errors.New("no app identity yet")
	}
	seed, err := a.GetKey(ctx, clusterKeyPath)
	if err != nil {
		return fmt.Errorf("deriving the cluster sealing key from the dstack KMS: %w", err)
	}
	key, err := hkdf.Key(sha256.New, seed, nil, "tee-ingress cluster seal v1", clusterstore.KeySize)
	if err != nil {
		return err
	}
	prefix := d.cfg.Cluster.Prefix
	if prefix == "" {
		prefix = "/tee-ingress/" + hex.EncodeToString(info.AppID) + "/"
	}
	s, err := clusterstore.Open(clusterstore.Options{
		Endpoints: d.cfg.Cluster.Endpoints, TLS: d.cfg.Cluster.TLS,
		Username: d.cfg.Cluster.Username, Password: d.cfg.Cluster.Password,
		Prefix: prefix, SealKey: key, Self: hex.EncodeToString(info.InstanceID),
		StateDir: filepath.Join(d.cfg.StateDir, "tee-ingress"),
		Logger:   d.log.With("component", "cluster"),
	})
	if err != nil {
		return fielderr.Rename(err, clusterFields)
	}
	d.shared.set(s)
	d.log.Info("replicas share a store", "endpoints", strings.Join(d.cfg.Cluster.Endpoints, ","), "prefix", prefix,
		"instance", hex.EncodeToString(info.InstanceID))
	return nil
}
