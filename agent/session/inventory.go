package session

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
)

// Inventory lists the containers the node holds secrets for, by ID (the
// agent's Containers): the heartbeat's inventory, from which the managers
// remove `service ps` rows whose WIPED report was lost.
type Inventory interface {
	Containers() []string
}

// SetInventory gives the session the node's list of containers; call it
// before Run. Without one, heartbeats carry no inventory (the managers
// then change nothing).
func (s *Session) SetInventory(inv Inventory) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inventory = inv
}

// inventoryDue is when a session's heartbeats carry the inventory. Not on
// every beat: at 10,000 nodes of up to 2,048 containers every 5 s that
// would be most of what the managers read. It is sent with the first beat
// of each session (an agent restart loses its queue, a reconnect may
// follow reports dropped or refused), after a beat where reports were
// dropped or refused, and when a manager asks for it
// (HeartbeatResponse.send_inventory: it could not apply one). It is sent
// again until a beat that carries it succeeds.
type inventoryDue struct {
	want bool
	// suspect: a beat with the inventory was refused as invalid, which
	// its inventory or one of its reports may have caused; the reports go
	// again without it to tell which.
	suspect bool
	// refused: a manager refused this session's inventory as invalid;
	// none is sent until the next session.
	refused bool
}

// takeInventory is the inventory this beat carries, nil for none. It must
// be taken after the beat's reports (reportQueue.batch), so that the two
// agree: the agent holds a container before it queues its MOUNTED and
// forgets it before it queues its WIPED (agent/reports.go), so a container
// mounted after the batch was taken is in neither (its row comes with its
// report), and one wiped after it is not in the inventory and its row goes
// now (its WIPED, next beat, finds no row). Taken before the batch, a
// container mounted in between would have its MOUNTED in the batch but
// not be in the inventory, and lose its row.
func (s *Session) takeInventory(due *inventoryDue) *dapi.ContainerInventory {
	if !due.want || due.suspect || due.refused {
		return nil
	}
	s.mu.Lock()
	src := s.inventory
	s.mu.Unlock()
	if src == nil {
		due.want = false
		return nil
	}
	ids := src.Containers()
	if len(ids) > dapi.MaxInventoryContainers {
		// The managers keep at most this many rows per node: a larger
		// inventory would be refused. Rows stay as reported.
		s.log.Warn("the node holds more containers than an inventory may list; none sent, and service ps may list containers that ended",
			"containers", len(ids), "limit", dapi.MaxInventoryContainers)
		due.want = false
		return nil
	}
	return &dapi.ContainerInventory{ContainerIds: ids}
}

// settleInventory updates due after a beat that carried inv (nil: none)
// was answered resp, err. It returns true when the beat's reports must be
// kept whatever err says: a refusal that may be the inventory's.
func (s *Session) settleInventory(due *inventoryDue, inv *dapi.ContainerInventory, resp *dapi.HeartbeatResponse, err error) (keepReports bool) {
	invalid := status.Code(err) == codes.InvalidArgument
	switch {
	case inv != nil && invalid:
		// The manager checks the inventory before it records any report,
		// so nothing of the beat was recorded: its reports go again,
		// without the inventory, to tell which was refused.
		due.suspect = true
		s.log.Warn("the manager refused a heartbeat with the container inventory; its reports go again without it", "err", err)
		return true
	case due.suspect && err == nil:
		// The same reports went through without it.
		due.suspect, due.refused = false, true
		s.log.Error("the manager refused the container inventory; service ps may list containers that ended until the next session")
	case due.suspect && invalid:
		// Refused without it too: a report was invalid (the reports are
		// dropped, and the inventory is due as after any drop).
		due.suspect = false
	}
	if err == nil {
		if inv != nil {
			due.want = false
		}
		if resp.GetSendInventory() {
			due.want = true
		}
	}
	return false
}
