//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/lockbox-project/lockbox/agent/localapi"
	"github.com/lockbox-project/lockbox/linux"
	"github.com/lockbox-project/lockbox/plugin/hook"
)

// defaultHookLog is where hook runs are recorded: runc throws a hook's
// output away unless it fails, so a file is the only trace of a success.
const defaultHookLog = "/run/lockbox/hook.log"

// runHook is the OCI hook entry point: lockbox-runtime hook createContainer|poststop.
func runHook(args []string, socket string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: lockbox-runtime hook createContainer|poststop  (OCI state on stdin)")
		return 2
	}
	h := &hook.Hook{
		Socket: socket,
		Dial: func(s string) (hook.Agent, error) {
			c, err := localapi.Dial(s)
			if err != nil {
				return nil, err
			}
			return c, nil
		},
		Attach: linux.AttachHandovers,
	}
	start := time.Now()
	err := h.Run(args[0], os.Stdin)
	logHook(args[0], time.Since(start), err)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lockbox:", err)
		return 1
	}
	return 0
}

func logHook(event string, took time.Duration, err error) {
	path := os.Getenv("LOCKBOX_HOOK_LOG")
	if path == "" {
		path = defaultHookLog
	}
	if os.MkdirAll(filepath.Dir(path), 0o700) != nil {
		return
	}
	f, ferr := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if ferr != nil {
		return
	}
	defer f.Close()
	result := "ok"
	if err != nil {
		result = "error: " + err.Error()
	}
	fmt.Fprintf(f, "%s hook %s pid=%d took=%s %s\n", time.Now().UTC().Format(time.RFC3339Nano), event, os.Getpid(), took.Round(time.Microsecond), result)
}
