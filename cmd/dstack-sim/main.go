package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/tee-ingress/tee-ingress/internal/agentsim"
)

const usage = `dstack-sim runs a dstack guest-agent simulator on a unix socket, for
running tee-ingress or any dstack SDK client on a machine without TDX. Its
quotes are signed under a simulator root CA, not Intel's: they prove nothing.

Usage:
    dstack-sim --socket PATH [--stripped] [--compose FILE] [--root-out FILE] [--seed TEXT]

Options:
    --socket PATH     unix socket to serve (required)
    --stripped        send the event log as dstack 0.5.6 and later do: runtime
                      events with an empty digest
    --compose FILE    app-compose.json whose SHA-256 is the compose hash
                      (default: a built-in demo compose)
    --root-out FILE   where to write the simulator root CA certificate
                      (default: dstack-sim-root.pem beside the socket)
    --seed TEXT       derive keys and identities from TEXT, so that restarts
                      keep the same root CA and app ID (default: random)

It prints one line, the export that points dstack clients at it, and serves
until interrupted.

Example:
    $ dstack-sim --socket /tmp/dstack.sock --seed dev &
    export DSTACK_SIMULATOR_ENDPOINT=/tmp/dstack.sock  # simulator root CA: /tmp/dstack-sim-root.pem (NOT a TEE: quotes prove nothing)
    $ export DSTACK_SIMULATOR_ENDPOINT=/tmp/dstack.sock
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is main without the process: it serves until ctx ends and returns the
// exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dstack-sim", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	socket := fs.String("socket", "", "")
	stripped := fs.Bool("stripped", false, "")
	composeFile := fs.String("compose", "", "")
	rootOut := fs.String("root-out", "", "")
	seedText := fs.String("seed", "", "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return 0
		}
		fmt.Fprintf(stderr, "dstack-sim: error: %v\n\n%s", err, usage)
		return 2
	}
	fail := func(err error, hint string) int {
		fmt.Fprintf(stderr, "dstack-sim: error: %v\n", err)
		if hint != "" {
			fmt.Fprintf(stderr, "hint: %s\n", hint)
		}
		return 1
	}
	if fs.NArg() > 0 {
		return fail(fmt.Errorf("unexpected argument %q", fs.Arg(0)), "all options are flags; see dstack-sim --help")
	}
	if *socket == "" {
		return fail(errors.New("--socket is required"), "dstack-sim --socket /tmp/dstack.sock")
	}
	sock, err := filepath.Abs(*socket)
	if err != nil {
		return fail(fmt.Errorf("resolving --socket %s: %w", *socket, err), "")
	}
	root := *rootOut
	if root == "" {
		root = filepath.Join(filepath.Dir(sock), "dstack-sim-root.pem")
	}
	if root, err = filepath.Abs(root); err != nil {
		return fail(fmt.Errorf("resolving --root-out: %w", err), "")
	}

	log := slog.New(slog.NewTextHandler(stderr, nil))
	cfg := agentsim.Config{Stripped: *stripped, Logger: log}
	if *composeFile != "" {
		if cfg.ComposeJSON, err = os.ReadFile(*composeFile); err != nil {
			return fail(fmt.Errorf("reading --compose: %w", err), "")
		}
	}
	if *seedText != "" {
		sum := sha256.Sum256([]byte("dstack-sim --seed " + *seedText))
		cfg.Seed = sum[:]
	}
	sim, err := agentsim.New(cfg)
	if err != nil {
		return fail(err, "--compose must name an app-compose.json (a JSON object)")
	}
	if err := sim.Serve(sock); err != nil {
		return fail(err, "pass another --socket path, or stop the process using it")
	}
	if err := os.WriteFile(root, sim.RootPEM(), 0o644); err != nil {
		sim.Close()
		return fail(fmt.Errorf("writing the root CA to --root-out %s: %w", root, err), "")
	}
	log.Info("simulated app", "app_id", hex.EncodeToString(sim.AppID()),
		"instance_id", hex.EncodeToString(sim.InstanceID()),
		"compose_hash", hex.EncodeToString(sim.ComposeHash()))
	fmt.Fprintf(stdout, "export DSTACK_SIMULATOR_ENDPOINT=%s  # simulator root CA: %s (NOT a TEE: quotes prove nothing)\n", sock, root)

	<-ctx.Done()
	if err := sim.Close(); err != nil {
		return fail(fmt.Errorf("stopping: %w", err), "")
	}
	log.Info("dstack simulator stopped")
	return 0
}
