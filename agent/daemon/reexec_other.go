//go:build !linux

package daemon

// Reexec does nothing off Linux: there GODEBUG=clobberfree=1,asyncpreemptoff=1
// must be set in the service's environment.
func Reexec() error { return nil }
