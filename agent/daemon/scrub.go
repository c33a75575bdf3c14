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
	if c.Dropped() != before {
		runtime.GC()
	}
	return err
}
