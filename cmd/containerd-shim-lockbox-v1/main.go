// Command containerd-shim-lockbox-v1 is the Lockbox proxy shim, runtime
// type io.containerd.lockbox.v1: the platform's runtime shim (runhcs on
// Windows, runc on Linux) with a container's Lockbox secrets placed
// between its create and its start (plugin/shimproxy).
package main

import "github.com/lockbox-project/lockbox/plugin/shimproxy"

func main() {
	shimproxy.Main()
}
