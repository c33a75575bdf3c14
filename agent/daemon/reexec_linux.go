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
	// Replace GODEBUG rather than add a second one: the runtime reads the
	// first, so an operator's GODEBUG would hide the setting and the
	// process would re-execute itself for ever.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			env = append(env, kv)
		}
	}
	env = append(env, "GODEBUG="+godebug+clobberFree)
	// /proc/self/exe works even if the binary was replaced on disk.
	if err := syscall.Exec("/proc/self/exe", os.Args, env); err != nil {
		return fmt.Errorf("re-exec with %s: %w", clobberFree, err)
	}
	return nil
}
