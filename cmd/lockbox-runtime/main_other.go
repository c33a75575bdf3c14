//go:build !linux

package main

import (
	"fmt"
	"os"
)

// lockbox-runtime wraps runc, which exists on Linux only. Windows
// containers get their secrets from the agent's Windows mounter through
// containerd's own hooks (see docs/windows.md).
func main() {
	fmt.Fprintln(os.Stderr, "lockbox-runtime: Linux only")
	os.Exit(1)
}
