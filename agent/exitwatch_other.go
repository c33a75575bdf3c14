//go:build !linux

package agent

// exitWatchKnown: no pidfds here. On Windows a container's secrets go at
// its release (no /proc either, so Reap cannot tell an ended container).
const exitWatchKnown = false

// exitWatch is never made on this platform (Agent.exits stays nil); it
// and its methods exist so that the platform-neutral code compiles.
type exitWatch struct{}

func newExitWatch(func(string, identity)) (*exitWatch, error) { return nil, errNoProcess }

func (*exitWatch) add(string, identity) error { return errNoProcess }
func (*exitWatch) forget(string)              {}
func (*exitWatch) start()                     {}
func (*exitWatch) close()                     {}

// processExited: no pidfd here, so a release always wipes before it
// answers.
func processExited(identity) bool { return false }
