package shimproxy

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/Microsoft/go-winio"
	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
)

// defaultInnerShim is hcsshim's runhcs shim.
const defaultInnerShim = "containerd-shim-runhcs-v1.exe"

// proxyAddress is the proxy's pipe for a group, under the prefix that
// only Administrators may create pipes in (as runhcs names its own).
func proxyAddress(_ context.Context, _ *bootapi.BootstrapParams, ns, grouping string) (string, error) {
	return fmt.Sprintf(`\\.\pipe\ProtectedPrefix\Administrators\lockbox-shim-%s-%s-pipe`, ns, grouping), nil
}

// startProxy starts the proxy's serving process on the pipe addr, or does
// nothing when a proxy already serves it (another container of the group).
// pkg/shim's start waits for the pipe before it answers containerd.
func startProxy(_ context.Context, self, dir, addr string, args []string) error {
	if canConnect(addr) {
		return nil
	}
	cmd := exec.Command(self, append(args, "-socket", addr)...)
	cmd.Dir = dir
	cmd.Env = os.Environ()
	if err := cmd.Start(); err != nil {
		return err
	}
	go cmd.Wait()
	return nil
}

func canConnect(addr string) bool {
	if !strings.HasPrefix(addr, `\\.\pipe\`) {
		return false
	}
	timeout := 200 * time.Millisecond
	c, err := winio.DialPipe(addr, &timeout)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// removeSocket does nothing: a pipe goes with the process serving it.
func removeSocket(string) {}
