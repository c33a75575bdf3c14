package manager

import (
	"bufio"
	"os"
	"strings"
	"testing"
)

// The key handed to etcd lives in a memfd whose pages are locked in RAM
// (never swapped), is read by path, and is replaced whole.
func TestMemFileLockedAndReplaced(t *testing.T) {
	m, err := newMemFile("lockbox-test-key", []byte("first key"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	if got, err := os.ReadFile(m.path()); err != nil || string(got) != "first key" {
		t.Fatalf("read %s: %q %v", m.path(), got, err)
	}
	if kb := lockedKB(t, "memfd:lockbox-test-key"); kb == 0 {
		t.Fatal("the memfd's pages are not locked in memory")
	}
	if err := m.replace([]byte("second, longer key")); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(m.path()); err != nil || string(got) != "second, longer key" {
		t.Fatalf("after replace: %q %v", got, err)
	}
	if kb := lockedKB(t, "memfd:replacement"); kb == 0 {
		t.Fatal("the replacement's pages are not locked in memory")
	}
}

// lockedKB sums the Locked: lines of this process's mappings of name.
func lockedKB(t *testing.T, name string) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in, kb := false, 0
	for sc.Scan() {
		line := sc.Text()
		if fields := strings.Fields(line); len(fields) >= 5 && strings.Contains(fields[0], "-") {
			in = strings.Contains(line, name)
			continue
		}
		if in && strings.HasPrefix(line, "Locked:") {
			var n int
			for _, r := range strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(line, "Locked:"), "kB")) {
				n = n*10 + int(r-'0')
			}
			kb += n
		}
	}
	return kb
}
