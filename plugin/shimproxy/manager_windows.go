package shimproxy

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/Microsoft/go-winio"
	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/v2/pkg/shim"
)

// defaultInnerShim is hcsshim's runhcs shim.
const defaultInnerShim = "containerd-shim-runhcs-v1.exe"

// logFile is where, in the bundle, the serving proxy logs. containerd
// reads a shim's log from the pipe \\.\pipe\containerd-shim-<ns>-<id>-log,
// which runhcs creates first: pkg/shim's logger, which would create the
// same pipe, is off (a second instance of it is refused, and the proxy
// would not start).
const logFile = "lockbox-proxy.log"

var runOpts = []shim.BinaryOpts{func(c *shim.Config) { c.NoSetupLogger = true }}

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
	logf, err := os.OpenFile(filepath.Join(dir, logFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("proxy log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(self, append(args, "-socket", addr)...)
	cmd.Dir = dir
	cmd.Env = os.Environ()
	cmd.Stderr = logf
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
