package evidence

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// While the bundle is rebuilt 1000 times, readers over HTTP and on disk
// never get a set that fails verification: every file matches sha256sum.txt,
// every file is listed, and the quote binds sha256sum.txt. (The quotes are
// unsigned here, so the signature is the one check left out.)
func TestAtomicPublication(t *testing.T) {
	rebuilds := 1000
	if testing.Short() {
		rebuilds = 200
	}
	dir := memTempDir(t)
	q := newUnsignedQuoter(t)
	p := newPublisher(t, q, dir)

	// Three inputs that differ in certificates and in the set of domains, so
	// that files appear, change and disappear between versions.
	pki := newTestPKI(t)
	var inputs []BundleInput
	for i := range 3 {
		in := testInput(t, pki)
		switch i {
		case 1:
			delete(in.Certs, "api.example.org")
		case 2:
			c, _ := pki.chain(t, "shop.example.net")
			in.Certs["shop.example.net"] = c
			delete(in.Certs, "*.example.com")
		}
		inputs = append(inputs, in)
	}
	if _, err := p.Publish(context.Background(), inputs[0]); err != nil {
		t.Fatal(err)
	}
	srv := served(t, p, q, HandlerConfig{})
	client := &http.Client{Timeout: 10 * time.Second}

	verifySet := func(files map[string][]byte) error {
		pb, err := ParseBundle(files)
		if err != nil {
			return err
		}
		if cs := bundleChecks(pb, VerifyOptions{}, false); Failed(cs, false) {
			return fmt.Errorf("inconsistent set: failed %v%s", failedNames(cs), dumpChecks(cs))
		}
		return nil
	}

	var (
		done                             atomic.Bool
		wg                               sync.WaitGroup
		httpOK, pinnedOK, topOK          atomic.Int64
		pinnedRetry, topRetry, httpRetry atomic.Int64
		failMu                           sync.Mutex
		failure                          error
	)
	fail := func(err error) {
		failMu.Lock()
		defer failMu.Unlock()
		if failure == nil {
			failure = err
		}
		done.Store(true)
	}
	progress := make(chan struct{}, 1)
	reader := func(read func() error) {
		defer wg.Done()
		deadline := time.Now().Add(2 * time.Minute)
		for !done.Load() && time.Now().Before(deadline) {
			if err := read(); err != nil {
				fail(err)
				return
			}
			select {
			case progress <- struct{}{}:
			default:
			}
		}
	}
	wg.Add(3)
	// HTTP: index, then every file, as verifycli fetches them.
	go reader(func() error {
		files, err := FetchBundle(context.Background(), client, srv.URL+"/evidences/", nil)
		if errors.Is(err, ErrBundleChanged) {
			httpRetry.Add(1)
			return nil
		}
		if err != nil {
			return fmt.Errorf("http reader: %w", err)
		}
		if err := verifySet(files); err != nil {
			return fmt.Errorf("http reader: %w", err)
		}
		httpOK.Add(1)
		return nil
	})
	// Disk, pinned: open .current once and read everything through it.
	go reader(func() error {
		files, err := ReadBundleDir(filepath.Join(dir, ".current"))
		if errors.Is(err, os.ErrNotExist) {
			pinnedRetry.Add(1) // the version was removed under us: start again
			return nil
		}
		if err != nil {
			return fmt.Errorf("pinned disk reader: %w", err)
		}
		if err := verifySet(files); err != nil {
			return fmt.Errorf("pinned disk reader: %w", err)
		}
		pinnedOK.Add(1)
		return nil
	})
	// Disk, top-level names (what `cd EVIDENCE_DIR && sha256sum -c` reads),
	// bracketed by readlink .current: unchanged means one version was read.
	go reader(func() error {
		before, err1 := os.Readlink(filepath.Join(dir, ".current"))
		files, err := ReadBundleDir(dir)
		after, err2 := os.Readlink(filepath.Join(dir, ".current"))
		if err1 != nil || err2 != nil {
			return fmt.Errorf("readlink .current: %v %v", err1, err2)
		}
		if before != after {
			topRetry.Add(1)
			return nil
		}
		if err != nil {
			return fmt.Errorf("top-level reader (version %s): %w", before, err)
		}
		if err := verifySet(files); err != nil {
			return fmt.Errorf("top-level reader (version %s): %w", before, err)
		}
		topOK.Add(1)
		return nil
	})

	// Every 100 rebuilds, each reader must complete a read before the next
	// ones: otherwise a slow reader (HTTP with one CPU under load) keeps
	// finding the bundle changed and proves nothing.
	okCounts := func() [3]int64 { return [3]int64{httpOK.Load(), pinnedOK.Load(), topOK.Load()} }
	var seen [3]int64
	waitReads := func(i int) {
		limit := time.NewTimer(time.Minute)
		defer limit.Stop()
		for {
			now := okCounts()
			if now[0] > seen[0] && now[1] > seen[1] && now[2] > seen[2] {
				seen = now
				return
			}
			select {
			case <-progress:
			case <-limit.C:
				fail(fmt.Errorf("after rebuild %d a reader completed no read for a minute (http, pinned, top-level: %v, before %v)", i, now, seen))
				return
			}
			if done.Load() {
				return
			}
		}
	}
	start := time.Now()
	for i := 1; i <= rebuilds && !done.Load(); i++ {
		if _, err := p.Publish(context.Background(), inputs[i%len(inputs)]); err != nil {
			fail(fmt.Errorf("rebuild %d: %w", i, err))
		}
		if i%100 == 0 {
			waitReads(i)
		}
	}
	elapsed := time.Since(start)
	done.Store(true)
	wg.Wait()
	if failure != nil {
		t.Fatal(failure)
	}
	t.Logf("%d rebuilds in %v; complete reads: http %d (%d retried), pinned disk %d (%d retried), top-level disk %d (%d retried)",
		rebuilds, elapsed, httpOK.Load(), httpRetry.Load(), pinnedOK.Load(), pinnedRetry.Load(), topOK.Load(), topRetry.Load())
	if httpOK.Load() == 0 || pinnedOK.Load() == 0 || topOK.Load() == 0 {
		t.Fatal("a reader never completed a read: the test proves nothing")
	}
	// The final state on disk is the last bundle, and nothing stale is left.
	last := p.Current()
	pb, err := LoadBundleDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !mapsEqualBytes(pb.Files, last.Files()) {
		t.Fatal("disk does not hold the last bundle")
	}
	versions := 0
	for _, n := range topLevel(t, dir) {
		if len(n) > 3 && n[:3] == ".v-" {
			versions++
		}
	}
	if versions > 2 {
		t.Fatalf("%d versions kept on disk, want at most 2", versions)
	}
}

// memTempDir is a temporary folder on tmpfs when there is one: this test is
// about what readers see, not durability, and 1000 rounds of fsync on a
// shared disk take minutes.
func memTempDir(t *testing.T) string {
	t.Helper()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "evidence-test-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

// A reader that opened .current just before its version was pruned must be
// told the version is gone (ENOENT: read again), as the publisher's layout
// promises, not that the bundle is broken. Pruning removes the files, then
// the folder: a reader can list the folder in between and find it empty.
func TestReadBundleDirVersionPruned(t *testing.T) {
	dir := t.TempDir()
	q := newUnsignedQuoter(t)
	p := newPublisher(t, q, dir)
	in := testInput(t, newTestPKI(t))
	publish := func() {
		t.Helper()
		if _, err := p.Publish(context.Background(), in); err != nil {
			t.Fatal(err)
		}
	}
	publish()
	current := filepath.Join(dir, ".current")
	first, err := os.Readlink(current)
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(current)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if files, err := readBundleRoot(root, current); err != nil || len(files) == 0 {
		t.Fatalf("before the swap: %d files, %v", len(files), err)
	}
	wantGone := func(when string) {
		t.Helper()
		_, err := readBundleRoot(root, current)
		if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "was removed while it was read") || !strings.Contains(err.Error(), "read it again") {
			t.Fatalf("%s: %v", when, err)
		}
	}

	// A newer version is in force, and the first is being pruned: listed
	// after its sha256sum.txt went (the pruner's first step), the files
	// left would look like a smaller bundle.
	publish()
	if err := os.Remove(filepath.Join(dir, first, SHA256SumFile)); err != nil {
		t.Fatal(err)
	}
	wantGone("the version being pruned")
	entries, err := os.ReadDir(filepath.Join(dir, first))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(dir, first, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	wantGone("the version emptied")

	// One more version: the pruner removes what is left of the first.
	publish()
	if _, err := os.Lstat(filepath.Join(dir, first)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("version %s still on disk (%v): the test needs it pruned", first, err)
	}
	wantGone("the version pruned")

	// A folder that is simply empty is still reported as such.
	empty := t.TempDir()
	eroot, err := os.OpenRoot(empty)
	if err != nil {
		t.Fatal(err)
	}
	defer eroot.Close()
	if _, err := readBundleRoot(eroot, empty); err == nil || errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "has no files") {
		t.Fatalf("an empty folder: %v", err)
	}
	// And the version in force reads whole.
	if files, err := ReadBundleDir(current); err != nil || len(files) == 0 {
		t.Fatalf("current version: %d files, %v", len(files), err)
	}
}
