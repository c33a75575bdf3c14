//go:build linux

// Command lockbox-runtime stands in for runc on the container-start path: it
// has the agent mount the secrets of a container that claims a service, and
// passes every other call straight to the real runc. "lockbox-runtime hook
// createContainer|poststop" is the OCI hook entry point.
//
// It runs once for every runc call of every container, so it links only
// plugin/runtime/hotpath, its hand-coded agent client and, for the hook's
// attach, linux: no protobuf, no net package, no gRPC, no etcd, no manager
// code (TestBinaryLinksNoHeavyPackages).
package main

import (
	"fmt"
	"os"

	"github.com/lockbox-project/lockbox/internal/agentsocket"
	"github.com/lockbox-project/lockbox/plugin/runtime/hotpath"
)

func main() {
	socket := os.Getenv("LOCKBOX_AGENT_SOCKET")
	if socket == "" {
		socket = agentsocket.Default
	}
	if len(os.Args) > 1 && os.Args[1] == "hook" {
		os.Exit(runHook(os.Args[2:], socket))
	}
	self, _ := os.Executable()
	runc, err := hotpath.LookRunc(os.Getenv, self)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lockbox-runtime:", err)
		os.Exit(127)
	}
	w := &hotpath.Wrapper{
		Runc:     runc,
		Socket:   socket,
		Dial:     hotpath.DialAgent,
		HookPath: self,
	}
	if v := os.Getenv("LOCKBOX_HOOK_LOG"); v != "" {
		w.HookEnv = append(w.HookEnv, "LOCKBOX_HOOK_LOG="+v)
	}
	if os.Getenv("LOCKBOX_RUNTIME_MODE") == "hook" {
		w.Mode = hotpath.AttachInHook
	}
	os.Exit(w.Main(os.Args[1:]))
}
