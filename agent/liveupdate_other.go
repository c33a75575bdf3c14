//go:build !linux

package agent

import "errors"

// errNoSignals is signalContainer where the platform has no pidfd.
var errNoSignals = errors.New("signals after a live update are sent on Linux only")

// signalContainer: see liveupdate_linux.go.
func signalContainer(pid int, start uint64, preStartExe, sig string) error { return errNoSignals }
