package daemon

import (
	"runtime"

	"github.com/lockbox-project/lockbox/agent/grants"
	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
)

// collectingCache runs a garbage collection after every message that
// removed secrets. The secrets' own memory is zeroed by the cache; the
// collection is for the copies the Go heap may still hold in buffers that
// crypto/tls or gRPC outgrew and dropped while the secret arrived. With
// GODEBUG=clobberfree=1 (see Reexec) the collector overwrites every object
// it frees, so once the collection returns those copies are gone too.
type collectingCache struct{ *grants.Cache }

func (c collectingCache) Apply(msg *dapi.SessionMessage) error {
	before := c.Dropped()
	err := c.Cache.Apply(msg)
	// Decoding the message and copying its secrets into locked memory
	// moved their bytes through this thread's vector registers (Go's
	// memmove keeps up to 256 bytes there, in registers little other code
	// touches). They would sit there until reused, and any signal to the
	// thread (the runtime's preemption signal, sent to every running thread
	// by the collection below) makes the kernel save them in a signal frame
	// on the thread's stack, outside the Go heap, where clobberfree never
	// reaches: TestNoSecretInMemoryAfterRemoval found a 160-byte secret's
	// bytes there, in the XMM slots of an FXSAVE area. Clear them first.
	clearVectorRegisters()
	if c.Dropped() != before {
		runtime.GC()
	}
	return err
}
