package store

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// followRetry is the pause before a broken watch is reloaded and resumed:
// long enough not to spin while etcd has no leader.
const followRetry = time.Second

// follow keeps a caller's view of the keys under key (one key, or every
// key under it when prefix is set) current until ctx ends. The caller read
// its view at revision after (0: watch from now); load re-reads the whole
// view. load runs after each watch response that changed a key, and
// whenever the watch breaks (no leader, compaction, closed) load runs
// again in full and the watch resumes from the revision read just before
// it, so no change is ever missed; a change may be seen twice, so load
// must be idempotent.
//
// This is the one watch-and-reload loop of the manager: revocations, the
// CRL, the manager registry and the keyring all use it.
func (s *Store) follow(ctx context.Context, key string, prefix bool, after int64, load func(context.Context)) {
	for ctx.Err() == nil {
		opts := []clientv3.OpOption{}
		if prefix {
			opts = append(opts, clientv3.WithPrefix())
		}
		if after > 0 {
			opts = append(opts, clientv3.WithRev(after+1))
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for wr := range s.cli.Watch(wctx, key, opts...) {
			if wr.Err() != nil || wr.Canceled {
				break
			}
			if n := len(wr.Events); n > 0 {
				after = wr.Events[n-1].Kv.ModRevision
				load(ctx)
			}
		}
		cancel()
		t := time.NewTimer(followRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		// The revision is read before the view: a change between the two
		// is delivered by the next watch, never lost.
		rev, err := s.Revision(ctx)
		if err != nil {
			continue
		}
		load(ctx)
		after = rev
	}
}
