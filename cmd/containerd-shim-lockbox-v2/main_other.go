//go:build !linux

// containerd-shim-lockbox-v2 is a Linux runtime shim; elsewhere it only
// says so.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "containerd-shim-lockbox-v2: runs on Linux only (containerd 2.x with runc)")
	os.Exit(1)
}
