package evidence

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tee-ingress/tee-ingress/internal/atomicfile"
)

// On-disk layout of EVIDENCE_DIR. The directory itself is usually a volume
// mount point shared with the app container, so it cannot be replaced; the
// bundle is switched inside it:
//
//	EVIDENCE_DIR/.v-7/            one complete bundle (real files), never modified once linked
//	EVIDENCE_DIR/.current -> .v-7 the version in force, replaced by rename(2) of a new symlink
//	EVIDENCE_DIR/cert.pem -> .current/cert.pem   one stable symlink per bundle file
//
// One rename flips every top-level name to the new version at once, and
// `cd EVIDENCE_DIR && sha256sum -c sha256sum.txt` keeps working as with
// dstack-ingress's flat folder. Each single file read is always a whole file
// of one version. A reader that needs several files of one version resolves
// .current once: `cd -P EVIDENCE_DIR/.current` (or openat on its descriptor,
// as LoadBundleDir does with os.Root); a reader that was too slow finds its
// version gone (ENOENT) and starts again, but never sees a mixed set (a
// version is pruned sha256sum.txt first, so a listing taken midway is
// recognised as going, not taken for a smaller bundle). The
// previous version is kept until the next swap so such readers usually finish.
const (
	currentLink   = ".current"
	versionPrefix = ".v-"
	tmpPrefix     = ".tmp-"
)

// BundleSource is where the evidence handler takes the bundle it serves.
type BundleSource interface {
	// Current returns the bundle in force, nil before the first one.
	Current() *Bundle
}

var _ BundleSource = (*Publisher)(nil)

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	// Quoter produces the quotes binding each bundle. Required.
	Quoter Quoter
	// Dir is the evidence folder (EVIDENCE_DIR). Empty: the bundle is only
	// kept in memory for HTTP.
	Dir string
	// Logger receives one line per publication. Nil: discard.
	Logger *slog.Logger
}

// Publisher builds bundles and publishes them: an immutable snapshot swapped
// in one step for HTTP, and the folder layout above on disk. A failed build
// or write leaves the previous bundle in force everywhere. Call Publish at
// every start (a bundle left on disk by an earlier run is replaced, never
// served from memory) and after every certificate change.
type Publisher struct {
	quoter Quoter
	dir    string
	log    *slog.Logger

	cur atomic.Pointer[Bundle]

	mu      sync.Mutex // serialises Publish
	version uint64     // last version number used on disk
	history []HistoryEntry
}

// NewPublisher prepares a publisher. With Dir set, it creates the folder if
// needed and reads the history.json left there by a previous run, so that the
// history survives restarts; nothing is written until the first Publish.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	if cfg.Quoter == nil {
		return nil, errors.New("evidence publisher: Quoter is required")
	}
	p := &Publisher{quoter: cfg.Quoter, dir: cfg.Dir, log: cfg.Logger}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.dir == "" {
		return p, nil
	}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating evidence dir: %w", err)
	}
	entries, err := os.ReadDir(p.dir)
	if err != nil {
		return nil, fmt.Errorf("reading evidence dir: %w", err)
	}
	for _, e := range entries {
		if n, ok := versionNumber(e.Name()); ok && n > p.version {
			p.version = n
		}
	}
	if b, err := os.ReadFile(filepath.Join(p.dir, HistoryFile)); err == nil {
		if h, err := ParseHistory(b); err == nil {
			p.history = h
		} else {
			p.log.Warn("ignoring unreadable certificate history; starting a new one", "file", filepath.Join(p.dir, HistoryFile), "err", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		p.log.Warn("ignoring unreadable certificate history; starting a new one", "file", filepath.Join(p.dir, HistoryFile), "err", err)
	}
	return p, nil
}

// Current returns the bundle in force, nil before the first Publish succeeds.
func (p *Publisher) Current() *Bundle { return p.cur.Load() }

// Publish builds a bundle from in (its History merged with every certificate
// published before), writes it to disk and swaps it in. On any error the
// previous bundle stays in force, on disk and for HTTP.
func (p *Publisher) Publish(ctx context.Context, in BundleInput) (*Bundle, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	in.History = MergeHistory(p.history, in.History)
	b, err := BuildBundle(ctx, p.quoter, in)
	if err != nil {
		p.log.Error("evidence bundle not published; previous one stays", "err", err)
		return nil, err
	}
	if p.dir != "" {
		if err := p.write(b); err != nil {
			p.log.Error("evidence bundle not published; previous one stays", "dir", p.dir, "err", err)
			return nil, err
		}
	}
	p.history = b.history
	p.cur.Store(b)
	s := b.SumsDigest()
	p.log.Info("evidence bundle published", "files", len(b.names), "sha256sum", hex.EncodeToString(s[:]), "dir", p.dir, "version", p.version)
	return b, nil
}

// write puts b on disk as a new version and switches .current to it.
func (p *Publisher) write(b *Bundle) error {
	n := p.version + 1
	vname := versionPrefix + strconv.FormatUint(n, 10)
	vdir := filepath.Join(p.dir, vname)
	if err := os.RemoveAll(vdir); err != nil {
		return fmt.Errorf("writing evidence: removing leftover %s: %w", vdir, err)
	}
	if err := os.Mkdir(vdir, 0o755); err != nil {
		return fmt.Errorf("writing evidence: %w", err)
	}
	p.version = n // the number is used even if the rest fails: never reuse a folder a reader may hold
	for _, name := range b.names {
		if err := writeFileSync(filepath.Join(vdir, name), b.files[name]); err != nil {
			os.RemoveAll(vdir)
			return fmt.Errorf("writing evidence: %w", err)
		}
	}
	if err := atomicfile.SyncDir(vdir); err != nil {
		os.RemoveAll(vdir)
		return fmt.Errorf("writing evidence: %w", err)
	}
	// Stable per-file links first: a new name dangles until the swap, which
	// readers see as "absent", the truth for the version still in force.
	for _, name := range b.names {
		if err := replaceSymlink(p.dir, name, currentLink+"/"+name); err != nil {
			os.RemoveAll(vdir)
			return fmt.Errorf("writing evidence: %w", err)
		}
	}
	prev, _ := os.Readlink(filepath.Join(p.dir, currentLink))
	if err := replaceSymlink(p.dir, currentLink, vname); err != nil {
		os.RemoveAll(vdir)
		return fmt.Errorf("writing evidence: switching %s: %w", currentLink, err)
	}
	if err := atomicfile.SyncDir(p.dir); err != nil {
		return fmt.Errorf("writing evidence: %w", err)
	}
	p.prune(b, vname, prev)
	return nil
}

// removeVersion removes a version folder, sha256sum.txt first: a reader
// that lists the folder while it is being emptied then finds no
// sha256sum.txt and knows the version is going (ReadBundleDir), instead of
// taking the files not yet removed for a whole bundle.
func removeVersion(path string) error {
	if err := os.Remove(filepath.Join(path, SHA256SumFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.RemoveAll(path)
}

// prune removes top-level names that are no longer in the bundle (removed
// domains, files of an older in-place layout) and versions older than the
// previous one. Failures are logged: the new bundle is in force already.
func (p *Publisher) prune(b *Bundle, keep, prev string) {
	entries, err := os.ReadDir(p.dir)
	if err != nil {
		p.log.Warn("pruning evidence dir", "dir", p.dir, "err", err)
		return
	}
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(p.dir, name)
		var err error
		switch {
		case strings.HasPrefix(name, versionPrefix):
			if name != keep && name != prev {
				err = removeVersion(path)
			}
		case strings.HasPrefix(name, tmpPrefix):
			err = os.RemoveAll(path)
		case IsBundleFileName(name):
			if _, ok := b.files[name]; !ok {
				err = os.Remove(path)
			}
		}
		if err != nil {
			p.log.Warn("pruning evidence dir", "path", path, "err", err)
		}
	}
	if err := atomicfile.SyncDir(p.dir); err != nil {
		p.log.Warn("pruning evidence dir", "dir", p.dir, "err", err)
	}
}

// versionNumber parses ".v-<n>".
func versionNumber(name string) (uint64, bool) {
	s, ok := strings.CutPrefix(name, versionPrefix)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// replaceSymlink points dir/name at target atomically (symlink + rename).
func replaceSymlink(dir, name, target string) error {
	path := filepath.Join(dir, name)
	if t, err := os.Readlink(path); err == nil && t == target {
		return nil
	}
	tmp := filepath.Join(dir, tmpPrefix+name)
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// writeFileSync creates path (which must not exist), writes data and fsyncs it.
func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
