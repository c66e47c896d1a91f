//go:build !unix

package dirlock

import "os"

// tryLock: no flock here; the directory is not guarded.
func tryLock(*os.File) (bool, error) { return false, nil }
