//go:build !linux

package agent

// signalContainer: see liveupdate_linux.go.
func signalContainer(pid int, start uint64, sig string) error { return errNoSignals }
