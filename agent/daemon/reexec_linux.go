package daemon

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
)

// debugSettings are the GODEBUG settings the agent runs with. The runtime
// reads them only at start, hence the re-exec.
//
//   - clobberfree=1 makes the garbage collector overwrite every heap object
//     it frees, so that a buffer the runtime or a library dropped while it
//     held secret bytes does not keep them until the memory happens to be
//     reused.
//   - asyncpreemptoff=1 stops the runtime from preempting goroutines with a
//     signal. Each such signal makes the kernel save the interrupted
//     thread's registers in a signal frame on the goroutine's signal stack,
//     and Go's memmove leaves up to 256 bytes of whatever it last moved in
//     vector registers little other code touches: the frame then holds
//     secret bytes (TestNoSecretInMemoryAfterRemoval found a 160-byte
//     secret's bytes in the XMM5 and XMM11 slots of such a frame, in stack
//     memory no collection clears, 4 times in 200 runs under load). The
//     collection the agent forces after a removal preempts every running
//     goroutine, which is when it happened. Without signals, goroutines are
//     preempted at function calls; the agent runs no long call-free loops.
var debugSettings = []string{"clobberfree=1", "asyncpreemptoff=1"}

// Reexec restarts the process, once, with debugSettings added to GODEBUG.
// Call it first thing in the agent; it returns only if the settings are
// already in place (or on error).
func Reexec() error {
	godebug := os.Getenv("GODEBUG")
	have := strings.Split(godebug, ",")
	var missing []string
	for _, s := range debugSettings {
		if !slices.Contains(have, s) {
			missing = append(missing, s)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if godebug != "" {
		godebug += ","
	}
	godebug += strings.Join(missing, ",")
	// Replace GODEBUG rather than add a second one: the runtime reads the
	// first, so an operator's GODEBUG would hide the settings and the
	// process would re-execute itself for ever.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			env = append(env, kv)
		}
	}
	env = append(env, "GODEBUG="+godebug)
	// /proc/self/exe works even if the binary was replaced on disk.
	if err := syscall.Exec("/proc/self/exe", os.Args, env); err != nil {
		return fmt.Errorf("re-exec with GODEBUG=%s: %w", godebug, err)
	}
	return nil
}
