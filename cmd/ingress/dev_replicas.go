//go:build !nodev

package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/tee-ingress/tee-ingress/internal/agentsim"
	"github.com/tee-ingress/tee-ingress/internal/etcdtest"
)

// runDevReplicas runs n instances of the dev app against one embedded etcd:
// one simulator each (one app, one KMS, n instance ids), one state dir
// each, on consecutive ports from --listen. It prints a verify line per
// instance and "ready" once all serve.
func runDevReplicas(ctx context.Context, w *devWorld, args []string, n int, log *slog.Logger, stdout, stderr io.Writer) int {
	etcd, err := etcdtest.Start(filepath.Join(w.dir, "etcd"))
	if err != nil {
		log.Error("cannot start the embedded etcd", "err", err)
		return 1
	}
	defer etcd.Stop()
	seed, err := devSeed(w.dir)
	if err != nil {
		log.Error("cannot read the simulator seed", "err", err)
		return 1
	}
	// One replica that stops (a port taken, a bad store) stops them all: a
	// demo with a replica missing would show something else than it says.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := &syncWriter{w: stdout}
	var ready sync.WaitGroup
	ready.Add(n)
	var wg sync.WaitGroup
	codes := make([]int, n)
	for i := range n {
		sock := filepath.Join(w.dir, devSocket)
		if i > 0 {
			// Same seed: the same app id, KMS and TDX root; its own instance.
			id := sha256.Sum256(append([]byte("dev replica instance-id "), byte(i)))
			sim, err := agentsim.New(agentsim.Config{Seed: seed, Stripped: true, InstanceID: id[:20]})
			if err == nil {
				sock = filepath.Join(w.dir, fmt.Sprintf("dstack-r%d.sock", i))
				err = sim.Serve(sock)
				defer sim.Close()
			}
			if err != nil {
				log.Error("cannot start a simulator for a replica", "replica", i, "err", err)
				return 1
			}
		}
		env := w.env(filepath.Join(w.dir, fmt.Sprintf("replica-%d", i)), sock)
		env["CLUSTER_STORE"] = "etcd://" + strings.TrimPrefix(etcd.Endpoint(), "http://")
		rargs, err := replicaArgs(args, i)
		if err != nil {
			fmt.Fprintf(stderr, "ingress: error: --dev --replicas: %s\n", err)
			return 2
		}
		dcfg, err := parseConfig(rargs, lookupIn(env))
		if err != nil {
			fmt.Fprintf(stderr, "ingress: error: --dev: %s\n", err)
			return 2
		}
		var once sync.Once
		wg.Go(func() {
			codes[i] = runDaemon(ctx, dcfg, log.With("replica", i), w.environment(env, out, nil, func(addr *net.TCPAddr) {
				once.Do(func() {
					w.printCommands(out, addr)
					ready.Done()
				})
			}))
			if ctx.Err() == nil {
				log.Error("a replica stopped; stopping the others", "replica", i, "code", codes[i])
				codes[i] = max(codes[i], 1)
				cancel()
			}
		})
	}
	allReady := make(chan struct{})
	go func() { ready.Wait(); close(allReady) }()
	select {
	case <-allReady:
		fmt.Fprintln(out, "ready")
	case <-ctx.Done():
	}
	wg.Wait()
	return slices.Max(codes)
}

// replicaArgs moves --listen and --metrics-listen of instance i to the i-th
// port after the one given (port 0 stays 0: any port).
func replicaArgs(args []string, i int) ([]string, error) {
	out := make([]string, 0, len(args))
	last := map[string]string{}
	for _, a := range args {
		for _, name := range []string{"--listen=", "--metrics-listen="} {
			if v, ok := strings.CutPrefix(a, name); ok {
				last[name] = v
			}
		}
		out = append(out, a)
	}
	for name, v := range last {
		host, port, err := net.SplitHostPort(v)
		p, perr := strconv.Atoi(port)
		if err != nil || perr != nil {
			return nil, fmt.Errorf("%s%s is not host:port", name, v)
		}
		if p != 0 {
			p += i
		}
		if p > 65535 {
			return nil, fmt.Errorf("%s%s: no room for replica %d's port", name, v, i)
		}
		out = append(out, name+net.JoinHostPort(host, strconv.Itoa(p)))
	}
	return out, nil
}

// syncWriter serialises the replicas' lines on stdout.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
