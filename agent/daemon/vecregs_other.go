//go:build !amd64

package daemon

// clearVectorRegisters is a no-op off amd64 (see scrub.go).
func clearVectorRegisters() {}
