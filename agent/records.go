package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// record is what the state directory keeps of a mounted container: enough
// to tell, after a restart, whether the container still exists. It never
// holds secret data.
type record struct {
	ID      string   `json:"id"`
	Service string   `json:"service"`
	Targets []string `json:"targets,omitempty"`
	// Pid and PidStart (the process start time in clock ticks since boot,
	// /proc/<pid>/stat field 22) name the container's process when known;
	// together they survive pid reuse.
	Pid      int    `json:"pid,omitempty"`
	PidStart uint64 `json:"pid_start,omitempty"`
	// Rootfs is the container's root as seen in its mount namespace, when
	// the agent attached through Pid.
	Rootfs string `json:"rootfs,omitempty"`
	// MntNS is the inode of the container's mount namespace, when the
	// caller was in it (an OCI hook). Any process still in it means the
	// container lives.
	MntNS uint64 `json:"mntns,omitempty"`
}

// containerIDRE is containerd's rule for IDs; it also makes an ID a safe
// file name.
var containerIDRE = regexp.MustCompile(`^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$`)

const maxContainerID = 76

func validContainerID(id string) bool {
	return len(id) <= maxContainerID && containerIDRE.MatchString(id)
}

// recordStore keeps one small JSON file per container under dir.
type recordStore struct{ dir string }

func newRecordStore(stateDir string) (*recordStore, error) {
	dir := filepath.Join(stateDir, "containers")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("container records %s: %w", dir, err)
	}
	return &recordStore{dir: dir}, nil
}

func (s *recordStore) path(id string) string { return filepath.Join(s.dir, id+".json") }

func (s *recordStore) put(r record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp := s.path(r.ID) + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("record container %s: %w", r.ID, err)
	}
	// No fsync: a record must outlive the agent's process, not the
	// machine (after a reboot its container is gone too), and the page
	// cache does that. A sync would cost milliseconds per container start.
	_, werr := f.Write(b)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("record container %s: %w", r.ID, err)
	}
	if err := os.Rename(tmp, s.path(r.ID)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("record container %s: %w", r.ID, err)
	}
	return nil
}

func (s *recordStore) remove(id string) error {
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("forget container %s: %w", id, err)
	}
	return nil
}

// list returns every record; unreadable ones are returned as errors and
// left in place for an operator to look at.
func (s *recordStore) list() ([]record, []error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, []error{err}
	}
	var out []record
	var errs []error
	for _, e := range ents {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") {
			os.Remove(filepath.Join(s.dir, name))
			continue
		}
		id, ok := strings.CutSuffix(name, ".json")
		if !ok || !validContainerID(id) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, name))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var r record
		if err := json.Unmarshal(b, &r); err != nil || r.ID != id {
			errs = append(errs, fmt.Errorf("container record %s: malformed", name))
			continue
		}
		out = append(out, r)
	}
	return out, errs
}

// alive reports whether r's container still has a process, and returns
// one (0 if none).
func (r record) alive(live map[uint64]int) (int, bool) {
	if r.Pid > 0 {
		if start, err := pidStart(r.Pid); err == nil && start == r.PidStart {
			return r.Pid, true
		}
	}
	if r.MntNS != 0 {
		if pid, ok := live[r.MntNS]; ok {
			return pid, true
		}
	}
	return 0, false
}
