package agent

import (
	"errors"
	"os"
	"strconv"
	"strings"

	"github.com/lockbox-project/lockbox/internal/procstat"
	"golang.org/x/sys/unix"
)

// pidStart returns the start time of pid (field 22 of /proc/<pid>/stat).
func pidStart(pid int) (uint64, error) {
	st, err := readStat(pid)
	return st.start, err
}

// procStat is what the agent reads of /proc/<pid>/stat.
type procStat struct {
	ppid  int
	start uint64
}

// readStat reads pid's parent and start time; a zombie is an error
// (procstat.ErrExited: for a container, as good as gone).
func readStat(pid int) (procStat, error) {
	st, err := procstat.Read(pid)
	return procStat{ppid: st.PPid, start: st.Start}, err
}

func parseStat(s string) (procStat, error) {
	st, err := procstat.Parse(s)
	return procStat{ppid: st.PPid, start: st.Start}, err
}

// mntNS returns the inode of pid's mount namespace.
func mntNS(pid string) (uint64, error) { return nsInode(pid, "mnt") }

// pidNS returns the inode of pid's pid namespace.
func pidNS(pid string) (uint64, error) { return nsInode(pid, "pid") }

func nsInode(pid, kind string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/"+pid+"/ns/"+kind, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// exeID names the file pid executes ("dev:inode" of /proc/<pid>/exe), or
// "" if it cannot be read. The kernel resolves the link whatever the
// process's mount namespace, and an exec changes it.
func exeID(pid int) string {
	var st unix.Stat_t
	if err := unix.Stat("/proc/"+strconv.Itoa(pid)+"/exe", &st); err != nil {
		return ""
	}
	return strconv.FormatUint(st.Dev, 10) + ":" + strconv.FormatUint(st.Ino, 10)
}

// innerPid returns pid as its own pid namespace numbers it: the last entry
// of NSpid in /proc/<pid>/status.
func innerPid(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		rest, ok := strings.CutPrefix(line, "NSpid:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		return strconv.Atoi(f[len(f)-1])
	}
	return 0, errors.New("no NSpid in status")
}

// maxAncestors bounds the walk up from a hook to its container's process:
// a runtime puts one or two processes between them.
const maxAncestors = 16

// errNoContainerProcess: the caller descends from no process that fits.
var errNoContainerProcess = errors.New("no such process among the caller's ancestors in its mount namespace")

// hookContainerProcess finds the process of the container a caller in it
// (an OCI createContainer hook, peer) speaks for, as this agent's /proc
// numbers it. runc and crun run createContainer hooks as descendants of
// the container's process, in its mount and pid namespaces, while that
// process's parent (the runtime, waiting for it) is outside them: the walk
// up from the hook visits only ancestors in both of the hook's namespaces.
// claimed is the pid the hook read from the OCI state, as the hook's pid
// namespace numbers it (runc's hooks see the container's init as 1): the
// ancestor with that number is the one, and a claimed pid no ancestor has
// is refused (it names some other process). claimed is 0 when the runtime
// gave none (crun 1.8 does): then the topmost ancestor is the one, when
// its parent is seen outside (a walk that reaches the host's init, or is
// cut short, proves nothing).
func hookContainerProcess(peer, claimed int) (int, error) {
	inside := func(pid string, mnt, pidns uint64) (bool, error) {
		m, err := mntNS(pid)
		if err != nil {
			return false, err
		}
		p, err := pidNS(pid)
		if err != nil {
			return false, err
		}
		return m == mnt && p == pidns, nil
	}
	peerS := strconv.Itoa(peer)
	mnt, err := mntNS(peerS)
	if err != nil {
		return 0, err
	}
	pidns, err := pidNS(peerS)
	if err != nil {
		return 0, err
	}
	st, err := readStat(peer)
	if err != nil {
		return 0, err
	}
	// topmost is the highest ancestor seen in the namespaces, parent its
	// parent.
	topmost, parent := 0, st.ppid
	for n := 0; parent > 0 && n < maxAncestors; n++ {
		p := parent
		if in, err := inside(strconv.Itoa(p), mnt, pidns); err != nil || !in {
			// Left the container: p is the runtime (or gone).
			break
		}
		if claimed != 0 {
			if inner, err := innerPid(p); err == nil && inner == claimed {
				return p, nil
			}
		}
		pst, err := readStat(p)
		if err != nil {
			return 0, errNoContainerProcess
		}
		topmost, parent = p, pst.ppid
	}
	if claimed != 0 || topmost == 0 || parent <= 0 {
		return 0, errNoContainerProcess
	}
	if in, err := inside(strconv.Itoa(parent), mnt, pidns); err != nil || in {
		return 0, errNoContainerProcess
	}
	return topmost, nil
}

// liveNamespaces returns the mount namespaces that hold a process now, each
// with one of its processes.
func liveNamespaces() map[uint64]int {
	live := map[uint64]int{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return live
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ns, err := mntNS(e.Name()); err == nil {
			if _, seen := live[ns]; !seen {
				live[ns] = pid
			}
		}
	}
	return live
}

// livenessKnown: /proc tells whether a recorded container still runs.
const livenessKnown = true
