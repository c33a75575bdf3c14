//go:build linux

// Package procmem reads a process's memory figures from
// /proc/<pid>/status for tests and benchmarks.
package procmem

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// KiB is field (a size such as VmRSS, VmHWM, VmLck, RssAnon) of process
// pid, in KiB; the test fails if the process or the field is missing.
func KiB(t testing.TB, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	n, err := parse(b, field)
	if err != nil {
		t.Fatalf("/proc/%d/status: %v", pid, err)
	}
	return n
}

// Bytes is KiB times 1024.
func Bytes(t testing.TB, pid int, field string) int64 {
	t.Helper()
	return KiB(t, pid, field) * 1024
}

func parse(status []byte, field string) (int64, error) {
	for _, line := range strings.Split(string(status), "\n") {
		rest, ok := strings.CutPrefix(line, field+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0, fmt.Errorf("%s has no value", field)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", field, err)
		}
		return n, nil
	}
	return 0, fmt.Errorf("no %s", field)
}
