package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/lockbox-project/lockbox/internal/atomicfile"
	"github.com/lockbox-project/lockbox/mounter"
)

// record is what the state directory keeps of a mounted container: enough
// to tell, after a restart, whether the container still exists. It never
// holds secret data.
type record struct {
	ID      string   `json:"id"`
	Service string   `json:"service"`
	Targets []string `json:"targets,omitempty"`
	// Pid and PidStart (the process start time in clock ticks since boot,
	// /proc/<pid>/stat field 22) name the container's process, as the
	// agent's /proc numbers it, when known; together they survive pid
	// reuse. The container lives exactly as long as that process.
	Pid      int    `json:"pid,omitempty"`
	PidStart uint64 `json:"pid_start,omitempty"`
	// PreStartExe names the file Pid executed when the agent attached
	// ("dev:inode" of /proc/<pid>/exe): every adapter attaches between the
	// runtime's create and start, so this is the runtime's init (runc
	// init, crun) waiting to exec the container's program. While Pid still
	// runs it, the container has not started: a live update's signal would
	// kill the runtime's init (Go's runtime exits on SIGHUP), and the
	// program reads the new files when it starts anyway.
	PreStartExe string `json:"pre_start_exe,omitempty"`
	// Rootfs is the container's root as seen in its mount namespace, when
	// the agent attached through Pid.
	Rootfs string `json:"rootfs,omitempty"`
	// MntNS is the inode of the container's mount namespace, when known.
	// It tells liveness only for records without a Pid (an OCI hook of an
	// agent before hooks sent pids): any process in it means the container
	// lives. The kernel reuses these inodes, so such a record may take a
	// later container for its own; a Pid never does.
	MntNS uint64 `json:"mntns,omitempty"`
	// OS is the container's platform ("linux" when empty).
	OS string `json:"os,omitempty"`
	// Files are the files the container holds now, by target: which
	// secret (ID, the version) with which owner and mode. A live update
	// rewrites them, so that a restarted agent knows what a container has
	// and what a later update must change. Records of agents before live
	// updates have Targets only.
	Files []recordFile `json:"files,omitempty"`
	// UIDMappings and GIDMappings are the container's user-namespace
	// mappings its files are owned for: a restarted agent owns a live
	// update's new files the same way.
	UIDMappings []mounter.IDMapping `json:"uid_mappings,omitempty"`
	GIDMappings []mounter.IDMapping `json:"gid_mappings,omitempty"`
}

// recordFile is one file of a record: names and IDs, never data.
type recordFile struct {
	Target     string `json:"target"`
	SecretID   string `json:"secret_id"`
	SecretName string `json:"secret_name"`
	UID        uint32 `json:"uid"`
	GID        uint32 `json:"gid"`
	Mode       uint32 `json:"mode"`
	Size       int64  `json:"size"`
	Signal     string `json:"signal,omitempty"`
}

// setFiles records files as the container's current files (and targets).
func (r *record) setFiles(files []mounter.File) {
	r.Files = make([]recordFile, len(files))
	r.Targets = make([]string, len(files))
	for i, f := range files {
		r.Files[i] = recordFile{Target: f.Target, SecretID: f.SecretID, SecretName: f.SecretName,
			UID: f.UID, GID: f.GID, Mode: uint32(f.Mode.Perm()), Size: f.Size, Signal: f.Signal}
		r.Targets[i] = f.Target
	}
}

// files returns the recorded files; a record without them (an older
// agent's) gives its targets with nothing known of their secrets, which
// every later update changes.
func (r record) files() []mounter.File {
	if len(r.Files) == 0 {
		out := make([]mounter.File, len(r.Targets))
		for i, t := range r.Targets {
			out[i] = mounter.File{Target: t}
		}
		return out
	}
	out := make([]mounter.File, len(r.Files))
	for i, f := range r.Files {
		out[i] = mounter.File{Target: f.Target, SecretID: f.SecretID, SecretName: f.SecretName, Name: f.SecretID,
			UID: f.UID, GID: f.GID, Mode: fs.FileMode(f.Mode), Size: f.Size, Signal: f.Signal}
	}
	return out
}

// identity is what the agent knows of the container a request comes from
// or a record was made for: its process (Pid and PidStart, zero if
// unknown) and its mount namespace (zero if unknown).
type identity struct {
	Pid      int
	PidStart uint64
	MntNS    uint64
}

func (r record) identity() identity {
	return identity{Pid: r.Pid, PidStart: r.PidStart, MntNS: r.MntNS}
}

// known reports whether id tells anything about its container.
func (id identity) known() bool { return id.Pid > 0 || id.MntNS != 0 }

// same reports whether id and other are provably the same container: the same
// process when both name one, else the same mount namespace when both name
// one. Two identities that know nothing are taken for the same container
// (callers that give the agent nothing to go by, as before it looked); one
// that knows something never matches one that knows nothing.
func (id identity) same(other identity) bool {
	switch {
	case id.Pid > 0 && other.Pid > 0:
		return id.Pid == other.Pid && id.PidStart == other.PidStart
	case id.MntNS != 0 && other.MntNS != 0:
		return id.MntNS == other.MntNS
	default:
		return !id.known() && !other.known()
	}
}

// verdict is what a Prepare of a container ID the agent already holds
// does.
type verdict int

const (
	// sameContainer: the holder asks again; answer from what is held.
	sameContainer verdict = iota
	// replaceEnded: the holder ended without a Release and a new
	// container took its ID: wipe the old mount, prepare the new one.
	replaceEnded
	// refuseInUse: the holder still runs and the request is another
	// container's: refuse, never wipe a live container.
	refuseInUse
)

func (v verdict) String() string {
	switch v {
	case sameContainer:
		return "same container"
	case replaceEnded:
		return "replace ended container"
	case refuseInUse:
		return "refuse: in use"
	}
	return "verdict(" + strconv.Itoa(int(v)) + ")"
}

// judge decides a Prepare of an ID held for a container whose record is
// held and whose liveness is heldAlive, from a caller identified as req.
// Only a holder whose record can be judged (it names a process or a
// namespace) can be found ended.
func judge(held identity, heldAlive bool, req identity) verdict {
	if held.known() && !heldAlive {
		return replaceEnded
	}
	if held.same(req) {
		return sameContainer
	}
	return refuseInUse
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
	// Not synced: a record must outlive the agent's process, not the
	// machine (after a reboot its container is gone too), and the page
	// cache does that. A sync would cost milliseconds per container start.
	if err := atomicfile.ReplaceFile(s.path(r.ID), b, 0o600); err != nil {
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
// one (0 if none). A record with a Pid is judged by that process alone:
// once it has gone (or its pid names another process) the container has
// ended, whatever now holds a namespace with the same inode. Only a record
// without one falls back to its mount namespace, looked up in live (from
// liveNamespaces; nil when no record needs it).
func (r record) alive(live map[uint64]int) (int, bool) {
	if r.Pid > 0 {
		if start, err := pidStart(r.Pid); err == nil && start == r.PidStart {
			return r.Pid, true
		}
		return 0, false
	}
	if r.MntNS != 0 {
		if pid, ok := live[r.MntNS]; ok {
			return pid, true
		}
	}
	return 0, false
}

// needsNamespaces reports whether alive needs liveNamespaces for r.
func (r record) needsNamespaces() bool { return r.Pid == 0 && r.MntNS != 0 }
