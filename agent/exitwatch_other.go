//go:build !linux

package agent

// exitWatchKnown: no pidfds here. On Windows a container's secrets go at
// its release, or at Reap where that can tell.
const exitWatchKnown = false

// exitWatch is never made on this platform; its methods exist for the
// platform-neutral code that calls them on a nil watch.
type exitWatch struct{}

func newExitWatch(func(string, identity)) (*exitWatch, error) { return nil, errNoProcess }

func (*exitWatch) add(string, identity) error { return errNoProcess }
func (*exitWatch) forget(string)              {}
func (*exitWatch) start()                     {}
func (*exitWatch) close()                     {}
