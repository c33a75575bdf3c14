//go:build linux

package shim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/lockbox-project/lockbox/internal/atomicfile"
	"github.com/lockbox-project/lockbox/internal/procstat"
)

// recordFile is the file beside config.json in which the shim records a
// claiming container's process, at create, for the release at delete and
// in the manager's Stop (a separate process: the record on disk is all it
// has).
const recordFile = "lockbox-claim.json"

// record is what a release needs: the container and its init process as
// the agent's /proc numbers it (pid and start time, /proc/<pid>/stat field
// 22), so that the release cannot wipe another container holding the same
// ID in another containerd namespace (agent.ReleaseRequest).
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

// procStart returns pid's start time, field 22 of /proc/<pid>/stat.
func procStart(pid int) (uint64, error) {
	st, err := procstat.Read(pid)
	return st.Start, err
}
