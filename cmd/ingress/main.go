package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/tee-ingress/tee-ingress/acme"
)

// defaultGOGC is the garbage collector's target unless GOGC is set. The
// live heap of a serving proxy is a few MiB, so collecting at +50% instead
// of +100% costs little CPU (proxybench: keep-alive CPU per request
// unchanged) and keeps peak RSS under load lower (20.7 MiB against 22.0).
const defaultGOGC = 50

func main() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGOGC)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	// SIGHUP is a reload, as operators of HAProxy and nginx expect; Go's
	// default for it is to exit at once, dropping every connection.
	// The channel's one slot makes signals that arrive during a reload one
	// more reload.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	code := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr, hup)
	stop()
	os.Exit(code)
}

// run is main without the process: it returns the exit status. stdout carries
// results only (the usage text, and in dev mode the verify and curl commands);
// logs go to stderr.
// reload receives SIGHUP; nil: never.
func run(ctx context.Context, args []string, lookup func(string) (string, bool), stdout, stderr io.Writer, reload <-chan os.Signal) int {
	records := len(args) > 0 && args[0] == "records"
	if records {
		args = args[1:]
	}
	cfg, err := parseConfig(args, lookup)
	if errors.Is(err, errHelp) {
		io.WriteString(stdout, usageText())
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "ingress: error: %s\n", err)
		if nothingSet(args, lookup) {
			hint := "hint: nothing is configured; ingress --help lists every setting"
			if devBuilt {
				hint += ", and ingress --dev runs a local demo"
			}
			fmt.Fprintln(stderr, hint)
		}
		return 2
	}
	log := newLogger(cfg, stderr)
	if records {
		return runRecords(ctx, cfg, log, stdout)
	}
	if cfg.Dev {
		return runDev(ctx, cfg, log, stdout, stderr, reload)
	}
	return runDaemon(ctx, cfg, log, environment{stdout: stdout, reload: reload})
}

func newLogger(cfg *Config, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel)) // validated by parseConfig; "" is info
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if cfg.LogJSON {
		h = slog.NewJSONHandler(w, opts)
	}
	log := slog.New(h)
	// lego logs through a package-wide logger: route it once per run (tests
	// call run several times in one process, never concurrently).
	acme.RouteLegoLogs(log)
	return log
}
