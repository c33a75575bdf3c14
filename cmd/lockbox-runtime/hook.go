//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/lockbox-project/lockbox/linux"
	"github.com/lockbox-project/lockbox/mounter"
	"github.com/lockbox-project/lockbox/plugin/runtime/hotpath"
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
	h := &hotpath.Hook{
		Socket: socket,
		Dial:   hotpath.DialAgent,
		Attach: attach,
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

// attach is linux.AttachHandovers: the mounts' targets are resolved inside
// rootfs without ever leaving it.
func attach(rootfs string, hs []hotpath.Handover) error {
	mhs := make([]mounter.Handover, len(hs))
	for i, h := range hs {
		mhs[i] = mounter.Handover{Target: h.Target, File: h.File}
	}
	return linux.AttachHandovers(rootfs, mhs)
}
