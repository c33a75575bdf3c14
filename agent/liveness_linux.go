package agent

import (
	"errors"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// errZombie is a process that has exited and waits to be reaped: for a
// container, as good as gone.
var errZombie = errors.New("process has exited")

// pidStart returns the start time of pid (field 22 of /proc/<pid>/stat).
func pidStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: the
	// fields after it start after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	fields := strings.Fields(string(b[i+1:]))
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 {
		return 0, errors.New("malformed stat")
	}
	if fields[0] == "Z" || fields[0] == "X" {
		return 0, errZombie
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// mntNS returns the inode of pid's mount namespace.
func mntNS(pid string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/"+pid+"/ns/mnt", &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
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
