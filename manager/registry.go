package manager

import (
	"context"
	"fmt"
	"slices"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/keys"
	"github.com/lockbox-project/lockbox/manager/store"
)

// managerLeaseSeconds is the lease of a manager's registry entry: a
// manager that is gone drops out of the list agents get this long after.
const managerLeaseSeconds = 15

// openStore takes the store on the manager's etcd (no sealer yet) and
// makes the keys manager on its keyring record, and the full store that
// seals with it. Nothing in this package talks to etcd but through these.
func (m *Manager) openStore(base *store.Store) {
	m.keys = keys.NewManager(base.Keyring())
	m.store = base.WithSealer(m.keys)
}

// registerSelf publishes this manager's address under a lease, so the
// list agents receive drops a manager that is gone, and follows the list.
func (m *Manager) registerSelf(ctx context.Context) error {
	if err := m.store.RegisterManager(ctx, m.st.NodeID, m.advertise, managerLeaseSeconds); err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	list, rev, err := m.store.Managers(ctx, false)
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	m.setManagers(list)
	go m.store.FollowManagers(ctx, rev, m.setManagers)
	// The manager's own node shows where it is and that it runs.
	if _, err := m.store.UpdateNode(ctx, m.st.NodeID, func(n *types.Node) error {
		n.State = types.NodeState_NODE_STATE_READY
		n.LastSeen = timestamppb.Now()
		n.Addr = m.advertise
		if n.Description == nil {
			n.Description = describeSelf()
		}
		return nil
	}); err != nil {
		m.log.Warn("cannot record this manager's node", "err", err)
	}
	return nil
}

// setManagers installs the registered list and tells connected agents
// when it changed.
func (m *Manager) setManagers(reg []store.ManagerAddr) {
	list := make([]string, 0, len(reg))
	for _, r := range reg {
		list = append(list, r.Addr)
	}
	if old := m.managers.Swap(&list); old != nil && !slices.Equal(*old, list) && m.disp != nil {
		m.disp.ManagersChanged()
	}
}

func (m *Manager) managerList() []string {
	if p := m.managers.Load(); p != nil {
		return *p
	}
	return []string{m.advertise}
}
