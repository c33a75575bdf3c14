package secretmem

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

func roundUp(n int) int {
	page := os.Getpagesize()
	if n == 0 {
		return page
	}
	return (n + page - 1) &^ (page - 1)
}

func alloc(n int) ([]byte, bool, error) {
	size := roundUp(n)
	region, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, false, fmt.Errorf("secretmem: mmap %d bytes: %w", size, err)
	}
	// Excluded from core dumps and never inherited by a forked child.
	for _, advice := range []int{unix.MADV_DONTDUMP, unix.MADV_DONTFORK} {
		if err := unix.Madvise(region, advice); err != nil {
			unix.Munmap(region)
			return nil, false, fmt.Errorf("secretmem: madvise: %w", err)
		}
	}
	// Fail closed: a secret that could be swapped out is refused. Root
	// (CAP_IPC_LOCK) is not bound by RLIMIT_MEMLOCK.
	if err := unix.Mlock(region); err != nil {
		unix.Munmap(region)
		return nil, false, fmt.Errorf("secretmem: mlock %d bytes (needs CAP_IPC_LOCK or a larger RLIMIT_MEMLOCK): %w", size, err)
	}
	return region, true, nil
}

func release(region []byte) error {
	// munmap drops the lock with the mapping.
	if err := unix.Munmap(region); err != nil {
		return fmt.Errorf("secretmem: munmap: %w", err)
	}
	return nil
}

// Harden makes the process non-dumpable (no core file; /proc/<pid>/mem and
// ptrace closed to everyone without CAP_SYS_PTRACE) and sets the core file
// limit to zero. Call it first thing in a daemon (the agent and the manager).
func Harden() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_DUMPABLE, 0): %w", err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
		return fmt.Errorf("setrlimit(RLIMIT_CORE, 0): %w", err)
	}
	return nil
}
