//go:build !linux

package agent

import "errors"

var errNoProc = errors.New("no /proc on this platform")

func pidStart(pid int) (uint64, error) { return 0, errNoProc }

func exeID(pid int) string { return "" }

func mntNS(pid string) (uint64, error) { return 0, errNoProc }

// hookContainerProcess needs /proc; the agent never calls it without
// livenessKnown.
func hookContainerProcess(peer, claimed int) (int, error) { return 0, errNoProc }

// liveNamespaces is empty where there is no /proc: records without a pid
// hint are then taken for finished containers.
func liveNamespaces() map[uint64]int { return map[uint64]int{} }

// livenessKnown: without /proc the agent cannot tell a finished container
// from a running one by itself.
const livenessKnown = false
