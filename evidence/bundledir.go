package evidence

// Reading a bundle folder lives beside the Publisher (publish.go): what a
// reader may see while a new version is swapped in and an old one pruned
// (removeVersion takes sha256sum.txt first) is the publisher's promise, and
// the two change together.

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// ReadBundleDir reads the files LoadBundleDir parses.
func ReadBundleDir(dir string) (map[string][]byte, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("reading bundle: %w", err)
	}
	defer root.Close()
	return readBundleRoot(root, dir)
}

// readBundleRoot reads the bundle in root, which was opened at dir.
func readBundleRoot(root *os.Root, dir string) (map[string][]byte, error) {
	d, err := root.Open(".")
	if err != nil {
		return nil, fmt.Errorf("reading bundle: %w", err)
	}
	entries, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && removedSinceOpened(root, dir) {
			return nil, errVersionGone(dir)
		}
		return nil, fmt.Errorf("reading bundle %s: %w", dir, err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		fi, err := root.Stat(name)
		if err != nil && e.Type()&fs.ModeSymlink != 0 {
			// A dangling link (a name of another version), or a link removed
			// since ReadDir (os.Root reports that as ELOOP): absent.
			if _, lerr := root.Lstat(name); errors.Is(err, fs.ErrNotExist) || errors.Is(lerr, fs.ErrNotExist) {
				continue
			}
		}
		if err != nil {
			return nil, fmt.Errorf("reading bundle: %w", err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		if fi.Size() > maxBundleFileSize {
			return nil, fmt.Errorf("reading bundle: %s/%s is %d bytes, at most %d accepted", dir, name, fi.Size(), maxBundleFileSize)
		}
		if len(files) == maxBundleFiles {
			return nil, fmt.Errorf("reading bundle: %s has more than %d files", dir, maxBundleFiles)
		}
		f, err := root.Open(name)
		if err != nil {
			return nil, fmt.Errorf("reading bundle: %w", err)
		}
		data, err := io.ReadAll(io.LimitReader(f, maxBundleFileSize+1))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("reading bundle %s/%s: %w", dir, name, err)
		}
		if len(data) > maxBundleFileSize {
			return nil, fmt.Errorf("reading bundle: %s/%s is over %d bytes", dir, name, maxBundleFileSize)
		}
		files[name] = data
	}
	// The publisher prunes a version sha256sum.txt first: without it, a
	// folder that is no longer the one dir names was listed while being
	// emptied, and what was read is part of a bundle.
	if _, ok := files[SHA256SumFile]; !ok && removedSinceOpened(root, dir) {
		return nil, errVersionGone(dir)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("reading bundle: %s has no files", dir)
	}
	return files, nil
}

// errVersionGone is the ENOENT the publisher's layout promises a reader
// whose version was pruned under it.
func errVersionGone(dir string) error {
	return fmt.Errorf("reading bundle: %s was removed while it was read (a newer bundle replaced it; read it again): %w", dir, fs.ErrNotExist)
}

// removedSinceOpened says whether the folder root was opened on is no longer
// what dir names: removed, or (through a symlink such as .current) replaced.
func removedSinceOpened(root *os.Root, dir string) bool {
	opened, err := root.Stat(".")
	if err != nil {
		return true
	}
	now, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	return err == nil && !os.SameFile(opened, now)
}
