//go:build linux

// Command lockbox-runtime stands in for runc on the container-start path: it
// has the agent mount the secrets of a container that claims a service, and
// passes every other call straight to the real runc.
//
// It is on the hot path of every container start, so it links only the
// agent's local API client: no gRPC, no etcd, no manager code.
package main

import (
	"fmt"
	"os"

	"github.com/lockbox-project/lockbox/agent/localapi"
	"github.com/lockbox-project/lockbox/plugin/runtime"
)

func main() {
	socket := os.Getenv("LOCKBOX_AGENT_SOCKET")
	if socket == "" {
		socket = localapi.DefaultSocket
	}
	if len(os.Args) > 1 && os.Args[1] == "hook" {
		os.Exit(runHook(os.Args[2:], socket))
	}
	self, _ := os.Executable()
	runc, err := runtime.LookRunc(os.Getenv, self)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lockbox-runtime:", err)
		os.Exit(127)
	}
	w := &runtime.Wrapper{
		Runc:     runc,
		Socket:   socket,
		Dial:     dial,
		HookPath: self,
	}
	if v := os.Getenv("LOCKBOX_HOOK_LOG"); v != "" {
		w.HookEnv = append(w.HookEnv, "LOCKBOX_HOOK_LOG="+v)
	}
	if os.Getenv("LOCKBOX_RUNTIME_MODE") == "hook" {
		w.Mode = runtime.AttachInHook
	}
	os.Exit(w.Main(os.Args[1:]))
}

func dial(socket string) (runtime.Agent, error) {
	c, err := localapi.Dial(socket)
	if err != nil {
		return nil, err
	}
	return c, nil
}
