//go:build linux

package shim

import "github.com/lockbox-project/lockbox/internal/procstat"

// procStart returns pid's start time, field 22 of /proc/<pid>/stat: with
// the pid, what the claim record (plugin/claimrecord) names the
// container's init by.
func procStart(pid int) (uint64, error) {
	st, err := procstat.Read(pid)
	return st.Start, err
}
