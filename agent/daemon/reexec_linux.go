package daemon

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

// clobberFree makes the garbage collector overwrite every heap object it
// frees, so that a buffer the runtime or a library dropped while it held
// secret bytes does not keep them until the memory happens to be reused.
// The runtime reads it only at start, hence the re-exec.
const clobberFree = "clobberfree=1"

// Reexec restarts the process, once, with GODEBUG=clobberfree=1 added to
// its environment. Call it first thing in the agent; it returns only if the
// setting is already in place (or on error).
func Reexec() error {
	godebug := os.Getenv("GODEBUG")
	for _, kv := range strings.Split(godebug, ",") {
		if kv == clobberFree {
			return nil
		}
	}
	if godebug != "" {
		godebug += ","
	}
	env := append(os.Environ(), "GODEBUG="+godebug+clobberFree)
	// /proc/self/exe works even if the binary was replaced on disk.
	if err := syscall.Exec("/proc/self/exe", os.Args, env); err != nil {
		return fmt.Errorf("re-exec with %s: %w", clobberFree, err)
	}
	return nil
}
