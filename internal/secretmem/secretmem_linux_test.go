package secretmem

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// vmLckKiB reads the locked memory of this process from /proc/self/status.
func vmLckKiB(t *testing.T) int {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmLck:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no VmLck in /proc/self/status")
	return 0
}

func TestLockedAndFreed(t *testing.T) {
	tests := []struct {
		name string
		size int
	}{
		{"empty", 0},
		{"one byte", 1},
		{"page", os.Getpagesize()},
		{"max secret", 500<<10 - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := vmLckKiB(t)
			src := bytes.Repeat([]byte{0xA5}, tt.size)
			b, err := Take(src)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(src, make([]byte, tt.size)) {
				t.Error("Take left the source bytes in place")
			}
			if !b.Locked() || b.Len() != tt.size {
				t.Errorf("locked=%v len=%d", b.Locked(), b.Len())
			}
			wantGrowth := roundUp(tt.size) / 1024
			if got := vmLckKiB(t) - before; got < wantGrowth {
				t.Errorf("VmLck grew by %d KiB, want >= %d", got, wantGrowth)
			}
			err = b.Use(func(data []byte) error {
				if len(data) != tt.size || (tt.size > 0 && (data[0] != 0xA5 || data[tt.size-1] != 0xA5)) {
					t.Errorf("Use saw %d bytes", len(data))
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}

			// Free must zero the whole mapping before unmapping it.
			var sawZeroed bool
			releaseFn = func(region []byte) error {
				sawZeroed = bytes.Equal(region, make([]byte, len(region)))
				return release(region)
			}
			defer func() { releaseFn = release }()
			if err := b.Free(); err != nil {
				t.Fatal(err)
			}
			if !sawZeroed {
				t.Error("memory not zeroed before unmap")
			}
			if got := vmLckKiB(t); got != before {
				t.Errorf("VmLck %d KiB after free, want %d", got, before)
			}
			if err := b.Free(); err != nil {
				t.Errorf("second free: %v", err)
			}
			if err := b.Use(func([]byte) error { return nil }); !errors.Is(err, ErrFreed) {
				t.Errorf("use after free: %v", err)
			}
		})
	}
}

func TestExcludedFromDumps(t *testing.T) {
	b, err := Take([]byte("marker"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free()
	var addr uint64
	b.Use(func(data []byte) error {
		addr = uint64(uintptrOf(data))
		return nil
	})
	// /proc/self/smaps marks the mapping "dd" (VM_DONTDUMP) and "lo" (VM_LOCKED).
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	var inMapping bool
	for _, line := range strings.Split(string(smaps), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 0 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			lo, hi, _ := strings.Cut(fields[0], "-")
			l, err1 := strconv.ParseUint(lo, 16, 64)
			h, err2 := strconv.ParseUint(hi, 16, 64)
			inMapping = err1 == nil && err2 == nil && l <= addr && addr < h
			continue
		}
		if inMapping && strings.HasPrefix(line, "VmFlags:") {
			for _, flag := range []string{"dd", "lo"} {
				if !strings.Contains(line, " "+flag) {
					t.Errorf("mapping flags %q lack %q", line, flag)
				}
			}
			return
		}
	}
	t.Fatal("mapping not found in /proc/self/smaps")
}

func TestHarden(t *testing.T) {
	// Harden is process-wide; run it in a child so the test binary stays
	// dumpable for the other tests.
	if os.Getenv("LOCKBOX_SECRETMEM_HARDEN") == "1" {
		if err := Harden(); err != nil {
			t.Fatal(err)
		}
		d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
		if err != nil || d != 0 {
			t.Fatalf("dumpable=%d err=%v", d, err)
		}
		var rl unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_CORE, &rl); err != nil || rl.Cur != 0 {
			t.Fatalf("core limit %v err=%v", rl, err)
		}
		return
	}
	runChild(t, "TestHarden", "LOCKBOX_SECRETMEM_HARDEN=1")
}
