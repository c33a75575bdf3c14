//go:build !windows

package shimproxy

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/shim"
)

// defaultInnerShim is the runc shim.
const defaultInnerShim = "containerd-shim-runc-v2"

// runOpts are pkg/shim's defaults: the proxy logs to the bundle's log
// fifo, which the inner shim writes to as well.
var runOpts []shim.BinaryOpts

// proxyAddress is the proxy's socket for a group: beside the shims'
// sockets, named from the group with a suffix so that it is never the
// inner shim's.
func proxyAddress(ctx context.Context, params *bootapi.BootstrapParams, ns, grouping string) (string, error) {
	dir := params.GetSocketDir()
	if dir == "" {
		dir = filepath.Join(defaults.DefaultStateDir, "s")
	}
	return shim.CreateSocketAddress(ctx, dir, params.GetContainerdGrpcAddress(), grouping+"/lockbox-proxy", false)
}

// startProxy starts the proxy's serving process on a new socket at addr,
// handed over as fd 3 as the runc shim hands its own, or does nothing when
// a proxy already serves addr (another container of the group).
func startProxy(ctx context.Context, self, dir, addr string, args []string) error {
	l, err := shim.NewSocket(addr)
	if err != nil {
		if !shim.SocketEaddrinuse(err) {
			return fmt.Errorf("create the proxy's socket: %w", err)
		}
		if shim.CanConnect(addr) {
			return nil
		}
		// Left by a proxy that died.
		if err := shim.RemoveSocket(addr); err != nil {
			return fmt.Errorf("remove stale proxy socket: %w", err)
		}
		if l, err = shim.NewSocket(addr); err != nil {
			return fmt.Errorf("create the proxy's socket: %w", err)
		}
	}
	// The serving process owns the socket from here: closing this
	// process's listener must not unlink it.
	l.SetUnlinkOnClose(false)
	f, err := l.File()
	l.Close()
	if err != nil {
		shim.RemoveSocket(addr)
		return err
	}
	defer f.Close()
	cmd := exec.Command(self, args...)
	cmd.Dir = dir
	cmd.Env = os.Environ()
	cmd.ExtraFiles = []*os.File{f}
	// Out of containerd's process group: a signal to containerd's group
	// must not take the proxy down with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		shim.RemoveSocket(addr)
		return err
	}
	go cmd.Wait()
	if err := shim.AdjustOOMScore(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		shim.RemoveSocket(addr)
		return fmt.Errorf("adjust the proxy's OOM score: %w", err)
	}
	return nil
}

func canConnect(addr string) bool { return shim.CanConnect(addr) }

func removeSocket(addr string) { shim.RemoveSocket(addr) }
