// Package procstat reads what Lockbox needs of /proc/<pid>/stat: a
// process's parent and its start time, the pair (pid, start) that names a
// process without the risk of a reused pid, and the CPU time it has used
// (the benchmarks' measure of the agent). The agent and the runtime shim
// read it the same way; it knows nothing of containers.
package procstat

import (
	"errors"
	"os"
	"strconv"
	"strings"
)

// ErrExited is a process that has exited and waits to be reaped (or is
// being reaped): as good as gone.
var ErrExited = errors.New("process has exited")

// errMalformed is a stat line that does not parse.
var errMalformed = errors.New("malformed /proc stat")

// Stat is what Lockbox reads of /proc/<pid>/stat.
type Stat struct {
	// PPid is field 4, the parent's pid.
	PPid int
	// Start is field 22, the start time in clock ticks after boot.
	Start uint64
	// UTime and STime are fields 14 and 15, the CPU time the process has
	// used in user and kernel mode, in clock ticks (USER_HZ), its threads'
	// included, those that have exited too.
	UTime, STime uint64
}

// TicksPerSecond is USER_HZ, the unit of Start, UTime and STime: fixed at
// 100 by the kernel's ABI for /proc on every architecture Lockbox builds
// for.
const TicksPerSecond = 100

// Read reads pid's stat; an exited process is ErrExited.
func Read(pid int) (Stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	return Parse(string(b))
}

// Parse reads a /proc/<pid>/stat line. The command name (field 2) may
// hold spaces and parentheses: the fields after it start after the last
// ')'.
func Parse(s string) (Stat, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return Stat{}, errMalformed
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is field 3 (state), fields[1] field 4 (ppid); field 22 is
	// fields[19].
	if len(fields) < 20 {
		return Stat{}, errMalformed
	}
	if fields[0] == "Z" || fields[0] == "X" {
		return Stat{}, ErrExited
	}
	ppid, err := strconv.Atoi(fields[1])
	if err != nil || ppid < 0 {
		return Stat{}, errMalformed
	}
	// fields[11] and fields[12] are fields 14 and 15.
	var ticks [3]uint64
	for i, f := range [3]int{19, 11, 12} {
		if ticks[i], err = strconv.ParseUint(fields[f], 10, 64); err != nil {
			return Stat{}, errMalformed
		}
	}
	return Stat{PPid: ppid, Start: ticks[0], UTime: ticks[1], STime: ticks[2]}, nil
}
