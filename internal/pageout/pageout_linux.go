//go:build linux

package pageout

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

const madvPageout = 21 // MADV_PAGEOUT, Linux 5.4

// Executable pages out the executable's read-only mappings (code and
// rodata; never its writable data) and reports how many bytes it advised.
func Executable() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		start, end, ok := readOnlyMapping(sc.Text(), exe)
		if !ok {
			continue
		}
		if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, start, end-start, madvPageout); e != 0 {
			return total, fmt.Errorf("madvise(MADV_PAGEOUT): %w", e)
		}
		total += int64(end - start)
	}
	return total, sc.Err()
}

// readOnlyMapping parses one /proc/self/maps line: the range of a mapping
// of path that is not writable.
func readOnlyMapping(line, path string) (start, end uintptr, ok bool) {
	f := strings.Fields(line)
	if len(f) < 6 || f[5] != path || len(f[1]) < 2 || f[1][1] != '-' || f[1][0] != 'r' {
		return 0, 0, false
	}
	lo, hi, found := strings.Cut(f[0], "-")
	if !found {
		return 0, 0, false
	}
	a, err1 := strconv.ParseUint(lo, 16, 64)
	b, err2 := strconv.ParseUint(hi, 16, 64)
	if err1 != nil || err2 != nil || b <= a {
		return 0, 0, false
	}
	return uintptr(a), uintptr(b), true
}
