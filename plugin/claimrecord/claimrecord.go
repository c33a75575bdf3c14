// Package claimrecord is the file a runtime shim keeps in a claiming
// container's bundle, beside config.json: the Linux shim (plugin/shim) and
// the proxy shim (plugin/shimproxy) write it before the agent holds
// anything for the container, and every release (at exit, at delete, in
// the shim manager's Stop, a separate process run also after a shim that
// died) reads it: on disk, never from memory alone.
//
// It holds IDs and process numbers only, never secret data. It imports the
// standard library and internal/atomicfile only.
package claimrecord

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/lockbox-project/lockbox/internal/atomicfile"
)

// File is the record's name in the bundle.
const File = "lockbox-claim.json"

// Record is what a release needs: the container and, on Linux, its init
// process as the agent's /proc numbers it (pid and start time,
// /proc/<pid>/stat field 22), so that the release cannot wipe another
// container holding the same ID in another containerd namespace
// (agent.ReleaseRequest). On Windows the pid is zero: the agent tells
// containers apart by ID there. The Linux shim leaves it zero too: it
// writes the record beside runc's create, before the pid exists, and
// releases only containers that have ended (plugin/shim recordClaim).
type Record struct {
	ID       string `json:"id"`
	Service  string `json:"service"`
	Pid      int32  `json:"pid"`
	PidStart uint64 `json:"pid_start"`
}

// Write records r in bundle, replacing any record atomically.
func Write(bundle string, r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := atomicfile.ReplaceFile(filepath.Join(bundle, File), b, 0o600); err != nil {
		return fmt.Errorf("record the claim in the bundle: %w", err)
	}
	return nil
}

// Read returns the bundle's record, or nil when there is none (the
// container claimed nothing, or it has been released).
func Read(bundle string) (*Record, error) {
	b, err := os.ReadFile(filepath.Join(bundle, File))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode %s: %w", filepath.Join(bundle, File), err)
	}
	return &r, nil
}

// Remove removes the bundle's record; none is not an error.
func Remove(bundle string) error {
	err := os.Remove(filepath.Join(bundle, File))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// SiblingBundle is the bundle of container id as containerd lays bundles
// out: siblings of the shim's working directory, the bundle it was started
// in (the runc shim manager's Stop uses the same rule). "" when the
// working directory is unknown.
func SiblingBundle(id string) string {
	cwd, err := os.Getwd()
	if err != nil {
		return ""
	}
	return filepath.Join(filepath.Dir(cwd), id)
}
