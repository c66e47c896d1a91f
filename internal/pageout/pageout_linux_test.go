//go:build linux

package pageout

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestExecutable: the test binary's read-only mappings are advised and
// their resident size drops; exeRss, run after, is paged-out code that
// comes back on its first touch.
func TestExecutable(t *testing.T) {
	before := exeRss(t)
	n, err := Executable()
	if errors.Is(err, syscall.EINVAL) {
		t.Skip("this kernel has no MADV_PAGEOUT (Linux 5.4)")
	}
	if err != nil || n <= 0 {
		t.Fatalf("Executable() = %d, %v", n, err)
	}
	after := exeRss(t)
	if after >= before {
		t.Errorf("resident read-only pages of the executable: %d kB before, %d kB after", before, after)
	}
}

// exeRss sums the resident kB of the executable's read-only mappings.
func exeRss(t *testing.T) int {
	t.Helper()
	exe, _ := os.Readlink("/proc/self/exe")
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Skip(err)
	}
	total, in := 0, false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 6 && strings.Contains(f[0], "-"):
			in = f[5] == exe && f[1][1] == '-'
		case in && len(f) == 3 && f[0] == "Rss:":
			kb, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("smaps: %q", line)
			}
			total += kb
		}
	}
	return total
}

func TestReadOnlyMapping(t *testing.T) {
	const exe = "/usr/bin/ingress"
	for _, tc := range []struct {
		line string
		ok   bool
	}{
		{"00400000-01a00000 r-xp 00000000 08:01 123 /usr/bin/ingress", true},
		{"01a00000-02a00000 r--p 01600000 08:01 123 /usr/bin/ingress", true},
		{"02a00000-02b00000 rw-p 02600000 08:01 123 /usr/bin/ingress", false}, // writable data
		{"7f0000000000-7f0000001000 r--p 00000000 08:01 9 /usr/lib/other.so", false},
		{"c000000000-c004000000 rw-p 00000000 00:00 0", false},
		{"02b00000-02a00000 r--p 0 08:01 123 /usr/bin/ingress", false}, // end before start
		{"zz-02a00000 r--p 0 08:01 123 /usr/bin/ingress", false},
	} {
		if _, _, ok := readOnlyMapping(tc.line, exe); ok != tc.ok {
			t.Errorf("%q: %v, want %v", tc.line, ok, tc.ok)
		}
	}
}
