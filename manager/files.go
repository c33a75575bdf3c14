package manager

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/lockbox-project/lockbox/internal/atomicfile"
)

// state is what a manager remembers about itself between starts. It holds
// no secret.
type state struct {
	NodeID    string `json:"node_id"`
	ClusterID string `json:"cluster_id"`
	Autolock  bool   `json:"autolock"`
	// PeerURL is the embedded etcd member's peer URL; empty with external etcd.
	PeerURL string `json:"peer_url,omitempty"`
	// InitialCluster is what a joining member starts with; etcd ignores
	// it once the member has data. Kept so that a join interrupted before
	// etcd wrote anything restarts as a join, not as a new cluster.
	InitialCluster string `json:"initial_cluster,omitempty"`
}

func (m *Manager) path(parts ...string) string {
	return filepath.Join(append([]string{m.cfg.DataDir}, parts...)...)
}

func (m *Manager) loadState() (*state, error) {
	b, err := os.ReadFile(m.path("state.json"))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var s state
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("read state %s: %w", m.path("state.json"), err)
	}
	return &s, nil
}

func (m *Manager) saveState(s *state) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(m.path("state.json"), append(b, '\n'), 0o600)
}
