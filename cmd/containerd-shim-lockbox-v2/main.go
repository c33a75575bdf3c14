//go:build linux

// containerd-shim-lockbox-v2 is the containerd runtime shim of runtime type
// io.containerd.lockbox.v2: containerd's runc shim with Lockbox's claims
// (plugin/shim).
package main

import "github.com/lockbox-project/lockbox/plugin/shim"

func main() {
	shim.Main()
}
