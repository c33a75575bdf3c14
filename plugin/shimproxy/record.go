package shimproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/lockbox-project/lockbox/internal/atomicfile"
)

// recordFile is the file beside config.json in which the proxy records a
// claiming container before the agent holds anything for it: the release
// at exit, at delete and in the manager's Stop (a separate process, run
// also after a proxy that died) reads it. The Linux shim (plugin/shim)
// keeps the same file under the same name.
const recordFile = "lockbox-claim.json"

// record is what a release needs: the container and, on Linux, its init
// process as the agent's /proc numbers it (pid and start time), so that
// the release cannot wipe another container holding the same ID in another
// containerd namespace. On Windows the pid is zero: the agent tells
// containers apart by ID there.
type record struct {
	ID       string `json:"id"`
	Service  string `json:"service"`
	Pid      int32  `json:"pid"`
	PidStart uint64 `json:"pid_start"`
}

func writeRecord(bundle string, r record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := atomicfile.ReplaceFile(filepath.Join(bundle, recordFile), b, 0o600); err != nil {
		return fmt.Errorf("record the claim in the bundle: %w", err)
	}
	return nil
}

// readRecord returns the bundle's record, or nil when there is none (the
// container claimed nothing, or it has been released).
func readRecord(bundle string) (*record, error) {
	b, err := os.ReadFile(filepath.Join(bundle, recordFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode %s: %w", filepath.Join(bundle, recordFile), err)
	}
	return &r, nil
}

func removeRecord(bundle string) error {
	err := os.Remove(filepath.Join(bundle, recordFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// releaseFromDisk releases the container recorded in bundle, if any, and
// removes the record once the agent has released it. Releasing is
// idempotent: an agent that holds nothing for the ID answers yes, and a
// second call finds no record and asks nothing.
func releaseFromDisk(ctx context.Context, dial dialAgent, socket, bundle string) error {
	if bundle == "" {
		return nil
	}
	rec, err := readRecord(bundle)
	if err != nil || rec == nil {
		return err
	}
	cl, err := dial(socket)
	if err != nil {
		return fmt.Errorf("release %s: lockbox agent not reachable: %w", rec.ID, err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, agentTimeout)
	defer cancel()
	if err := cl.ReleaseProcess(ctx, rec.ID, rec.Pid, rec.PidStart); err != nil {
		return fmt.Errorf("release %s: %w", rec.ID, err)
	}
	return removeRecord(bundle)
}
