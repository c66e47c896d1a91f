//go:build !linux

package pageout

// Executable does nothing where there is no MADV_PAGEOUT.
func Executable() (int64, error) { return 0, nil }
