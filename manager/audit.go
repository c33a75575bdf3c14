package manager

import (
	"context"
	"time"

	"github.com/lockbox-project/lockbox/manager/store"
)

// auditCompactEvery is how often the audit log is cut back to its
// retention (store.DefaultAuditRetentions: a budget for node-reported
// entries and one for the others).
const auditCompactEvery = 10 * time.Minute

// compactAuditLoop keeps the audit log bounded. The manager whose embedded
// etcd member leads does it, so one manager works at a time; on an
// external etcd every manager does (harmless: each removes only the
// oldest entries beyond the cap).
func (m *Manager) compactAuditLoop(ctx context.Context) {
	t := time.NewTicker(auditCompactEvery)
	defer t.Stop()
	for {
		if m.member == nil || m.member.IsLeader() {
			keep := store.DefaultAuditRetentions()
			if n, err := m.store.CompactAudit(ctx, keep); err != nil && ctx.Err() == nil {
				m.log.Warn("cannot compact the audit log", "err", err)
			} else if n > 0 {
				m.log.Info("audit log compacted", "removed", n, "kept", keep.Others, "kept_node_reported", keep.NodeReported)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
