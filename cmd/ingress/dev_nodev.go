//go:build nodev

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
)

// devBuilt: --dev is not in this build; --help does not offer it.
const devBuilt = false

// runDev is absent from production builds (-tags nodev, as the Dockerfile
// builds): the dev world links pebble, emulators and the guest-agent
// simulator, code the TEE has no reason to carry.
func runDev(_ context.Context, _ *Config, _ *slog.Logger, _, stderr io.Writer, _ <-chan os.Signal) int {
	fmt.Fprintln(stderr, "ingress: error: --dev is not in this build (built with -tags nodev, as the container image is)")
	fmt.Fprintln(stderr, "hint: run it from the source tree: go run ./cmd/ingress --dev")
	return 2
}
