package clusterstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/tee-ingress/tee-ingress/internal/atomicfile"
)

// generations remembers, per etcd key, the highest generation this instance
// accepted, on disk so that a restart cannot be rolled back either.
type generations struct {
	path string
	mu   sync.Mutex
	seen map[string]uint64
}

func loadGenerations(path string) (*generations, error) {
	g := &generations{path: path, seen: map[string]uint64{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return g, nil
	}
	if err != nil {
		return nil, fmt.Errorf("clusterstore: reading %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &g.seen); err != nil {
		return nil, fmt.Errorf("clusterstore: %s is damaged (%v); it protects against a rolled-back store, so it is not reset on its own: remove it only if you trust the store's current content", path, err)
	}
	return g, nil
}

func (g *generations) get(key string) uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.seen[key]
}

// errPersist wraps a failure to write the generations file: the value is
// accepted (the generation is held in memory) and the write is retried at
// the next higher generation.
var errPersist = errors.New("recording the generation")

// accept records gen for key, refusing one lower than what was seen.
func (g *generations) accept(key string, gen uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	prev := g.seen[key]
	if gen < prev {
		return fmt.Errorf("generation %d is older than %d, already seen (the store was rolled back?)", gen, prev)
	}
	if gen == prev {
		return nil
	}
	g.seen[key] = gen
	b, err := json.Marshal(g.seen)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(g.path), 0o700); err != nil {
		return fmt.Errorf("%w: %w", errPersist, err)
	}
	if err := atomicfile.WriteFile(g.path, b, 0o600); err != nil {
		return fmt.Errorf("%w: %w", errPersist, err)
	}
	return nil
}
