package linux

import (
	"fmt"

	"github.com/lockbox-project/lockbox/mounter"
)

// UnmappedError is an owner a grant asks for that the container's user
// namespace cannot represent: the file would show up as owned by nobody.
type UnmappedError struct {
	Secret string
	Kind   string // "uid" or "gid"
	ID     uint32
}

func (e *UnmappedError) Error() string {
	return fmt.Sprintf("secret %q: %s %d is not mapped in the container's user namespace", e.Secret, e.Kind, e.ID)
}

// mapID translates a container id to the host id through a user-namespace
// map. No mappings means no user namespace: the id is used as is.
func mapID(id uint32, ms []mounter.IDMapping) (uint32, bool) {
	if len(ms) == 0 {
		return id, true
	}
	for _, m := range ms {
		if id >= m.ContainerID && uint64(id-m.ContainerID) < uint64(m.Size) {
			host := uint64(m.HostID) + uint64(id-m.ContainerID)
			if host >= 1<<32-1 {
				return 0, false
			}
			return uint32(host), true
		}
	}
	return 0, false
}
