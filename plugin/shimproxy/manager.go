package shimproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"

	"github.com/lockbox-project/lockbox/internal/atomicfile"
	"github.com/lockbox-project/lockbox/plugin/claimrecord"
)

// RuntimeType is the runtime type containerd knows the proxy by; it runs
// it as containerd-shim-lockbox-v1 (.exe on Windows) found on its PATH.
const RuntimeType = "io.containerd.lockbox.v1"

// stateFile is the file in each bundle that tells the proxy's serving
// process, and the manager's Stop after it, how to reach the inner shim.
const stateFile = "lockbox-proxy.json"

// innerStartTimeout bounds the inner shim's start and delete commands.
const innerStartTimeout = 60 * time.Second

// proxyState is stateFile's content.
type proxyState struct {
	InnerBinary  string `json:"inner_binary"`
	InnerAddress string `json:"inner_address"`
	InnerVersion int32  `json:"inner_version"`
	// Address is the proxy's own socket (Linux) or pipe (Windows).
	Address string `json:"address"`
}

func writeState(bundle string, st proxyState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return atomicfile.ReplaceFile(filepath.Join(bundle, stateFile), b, 0o600)
}

// readState returns the bundle's state, nil when there is none.
func readState(bundle string) (*proxyState, error) {
	b, err := os.ReadFile(filepath.Join(bundle, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st proxyState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("decode %s: %w", filepath.Join(bundle, stateFile), err)
	}
	return &st, nil
}

// InnerShim is the inner shim's binary: LOCKBOX_INNER_SHIM (a path, or a
// name looked up on PATH), else this platform's runtime shim
// (containerd-shim-runc-v2, containerd-shim-runhcs-v1.exe).
func InnerShim(getenv func(string) string) (string, error) {
	name := getenv("LOCKBOX_INNER_SHIM")
	if name == "" {
		name = defaultInnerShim
	}
	p, err := exec.LookPath(name)
	if err == nil {
		return filepath.Abs(p)
	}
	// containerd also finds shims next to itself; the proxy looks next
	// to itself.
	if self, serr := os.Executable(); serr == nil && !strings.ContainsAny(name, `/\`) {
		if q, qerr := exec.LookPath(filepath.Join(filepath.Dir(self), name)); qerr == nil {
			return q, nil
		}
	}
	return "", fmt.Errorf("inner shim %q: %w", name, err)
}

// Manager is the proxy's shim manager: start starts the inner shim, then
// the proxy in front of it; delete (Stop) cleans up after both.
type Manager struct {
	getenv func(string) string
}

// NewManager returns the proxy's manager, configured from the process
// environment (containerd's).
func NewManager() *Manager { return &Manager{getenv: os.Getenv} }

// Name is the runtime type.
func (m *Manager) Name() string { return RuntimeType }

// Start runs the inner shim's own start (the same flags and bootstrap
// parameters, in the same bundle), reads the address it prints, records
// it in the bundle and starts the proxy's serving process in front of it,
// or points at the one already serving the container's group (a CRI pod).
func (m *Manager) Start(ctx context.Context, params *bootapi.BootstrapParams) (_ *bootapi.BootstrapResult, retErr error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	bin, err := InnerShim(m.getenv)
	if err != nil {
		return nil, err
	}
	cwd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	debug := params.GetLogLevel() <= bootapi.LogLevel_LOG_LEVEL_DEBUG
	in, err := proto.Marshal(params)
	if err != nil {
		return nil, err
	}
	out, err := runInner(ctx, bin, cwd, bytes.NewReader(in), innerArgs(ns, params.GetInstanceID(), params.GetContainerdGrpcAddress(), "", debug, "start"))
	if err != nil {
		return nil, fmt.Errorf("inner shim %s start: %w", bin, err)
	}
	innerAddr, version, err := parseStartOutput(out)
	if err != nil {
		return nil, fmt.Errorf("inner shim %s start: %w", bin, err)
	}
	defer func() {
		if retErr != nil {
			// An inner shim with no task left exits on Shutdown; one that
			// serves other containers of the group stays.
			shutdownInner(ctx, innerAddr, version)
		}
	}()
	grouping := groupID(cwd, params.GetInstanceID())
	addr, err := proxyAddress(ctx, params, ns, grouping)
	if err != nil {
		return nil, err
	}
	st := proxyState{InnerBinary: bin, InnerAddress: innerAddr, InnerVersion: version, Address: addr}
	if err := writeState(cwd, st); err != nil {
		return nil, fmt.Errorf("record the inner shim in the bundle: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"-namespace", ns, "-id", params.GetInstanceID(), "-address", params.GetContainerdGrpcAddress()}
	if pb := flagValue("publish-binary"); pb != "" {
		args = append(args, "-publish-binary", pb)
	}
	if debug {
		args = append(args, "-debug")
	}
	if err := startProxy(ctx, self, cwd, addr, args); err != nil {
		return nil, err
	}
	return &bootapi.BootstrapResult{Version: 3, Protocol: "ttrpc", Address: addr}, nil
}

// Stop runs in a short-lived process after each delete, and after a proxy
// that died. It removes the task from the inner shim when it still has it
// (the proxy died: kill, wait, delete), runs the inner shim's own delete,
// and releases the container's secrets from the record in the bundle.
func (m *Manager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	bundle := stopBundle(ctx, id)
	st, err := readState(bundle)
	if err != nil {
		log.G(ctx).WithError(err).Warn("lockbox: read the proxy's state")
	}
	status := shim.StopStatus{ExitedAt: time.Now()}
	var stopErr error
	if st != nil {
		cleanInner(ctx, st, id)
		status, stopErr = innerDelete(ctx, st.InnerBinary, bundle, id)
		if st.Address != "" && !canConnect(st.Address) {
			removeSocket(st.Address)
		}
	}
	if err := releaseFromDisk(ctx, dialLocalAPI, AgentSocket(m.getenv), bundle); err != nil {
		log.G(ctx).WithError(err).WithField("id", id).Warn("lockbox: release in shim stop")
	}
	return status, stopErr
}

// Info is the inner shim's -info, under the proxy's name.
func (m *Manager) Info(ctx context.Context, optionsR io.Reader) (*types.RuntimeInfo, error) {
	bin, err := InnerShim(m.getenv)
	if err != nil {
		return nil, err
	}
	cwd, _ := os.Getwd()
	out, err := runInner(ctx, bin, cwd, optionsR, []string{"-info"})
	if err != nil {
		return nil, fmt.Errorf("inner shim %s -info: %w", bin, err)
	}
	var info types.RuntimeInfo
	if err := proto.Unmarshal(out, &info); err != nil {
		return nil, fmt.Errorf("inner shim %s -info: %w", bin, err)
	}
	info.Name = RuntimeType
	return &info, nil
}

// stopBundle is the bundle of container id: the -bundle containerd
// passes to delete, else the sibling of the working directory.
func stopBundle(ctx context.Context, id string) string {
	if o, ok := ctx.Value(shim.OptsKey{}).(shim.Opts); ok && o.BundlePath != "" {
		return o.BundlePath
	}
	return claimrecord.SiblingBundle(id)
}

// cleanInner removes task id from the inner shim if it still runs it (a
// proxy killed mid-way leaves the inner shim and its container up), then
// asks it to shut down, which it does once it serves no task.
func cleanInner(ctx context.Context, st *proxyState, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	inner, closeInner, err := dialInner(st.InnerAddress, st.InnerVersion, time.Second, nil)
	if err != nil {
		return // gone with its tasks, or never started
	}
	defer closeInner()
	killWaitDelete(ctx, inner, id, "in shim stop")
	if _, err := inner.Shutdown(ctx, &taskAPI.ShutdownRequest{ID: id}); err != nil && !errors.Is(err, ttrpc.ErrClosed) {
		log.G(ctx).WithError(err).Debug("lockbox: inner shim shutdown in shim stop")
	}
}

// shutdownInner asks the inner shim at addr to shut down.
func shutdownInner(ctx context.Context, addr string, version int32) {
	inner, closeInner, err := dialInner(addr, version, time.Second, nil)
	if err != nil {
		return
	}
	defer closeInner()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	inner.Shutdown(ctx, &taskAPI.ShutdownRequest{})
}

// dialInner connects to the inner shim's task service. onClose, if set,
// runs when the connection ends.
func dialInner(addr string, version int32, timeout time.Duration, onClose func()) (*innerTasks, func() error, error) {
	conn, err := shim.AnonReconnectDialer(addr, timeout)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to the inner shim at %s: %w", addr, err)
	}
	var opts []ttrpc.ClientOpts
	if onClose != nil {
		opts = append(opts, ttrpc.WithOnClose(onClose))
	}
	client := ttrpc.NewClient(conn, opts...)
	inner, err := newInnerTasks(client, version)
	if err != nil {
		client.Close()
		return nil, nil, err
	}
	return inner, client.Close, nil
}

// innerDelete runs the inner shim's delete for container id (its runtime
// state: runc delete --force, the HCS system) and returns what it reports.
func innerDelete(ctx context.Context, bin, bundle, id string) (shim.StopStatus, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return shim.StopStatus{}, err
	}
	cwd, _ := os.Getwd()
	args := innerArgs(ns, id, flagValue("address"), bundle, false, "delete")
	out, err := runInner(ctx, bin, cwd, nil, args)
	if err != nil {
		return shim.StopStatus{}, fmt.Errorf("inner shim %s delete: %w", bin, err)
	}
	var resp taskAPI.DeleteResponse
	if err := proto.Unmarshal(out, &resp); err != nil {
		return shim.StopStatus{}, fmt.Errorf("inner shim %s delete: %w", bin, err)
	}
	return shim.StopStatus{Pid: int(resp.Pid), ExitStatus: int(resp.ExitStatus), ExitedAt: protobuf.FromTimestamp(resp.ExitedAt)}, nil
}

// innerArgs are the flags containerd gives a shim, for the inner one.
func innerArgs(ns, id, address, bundle string, debug bool, action string) []string {
	args := []string{"-namespace", ns, "-id", id, "-address", address}
	if pb := flagValue("publish-binary"); pb != "" {
		args = append(args, "-publish-binary", pb)
	}
	if bundle != "" {
		args = append(args, "-bundle", bundle)
	}
	if debug {
		args = append(args, "-debug")
	}
	return append(args, action)
}

// runInner runs the inner shim binary in dir and returns its stdout; its
// stderr goes to the proxy's (containerd's log).
func runInner(ctx context.Context, bin, dir string, stdin io.Reader, args []string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, innerStartTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Stdin = stdin
	cmd.Stderr = os.Stderr
	cmd.Env = os.Environ()
	return cmd.Output()
}

// parseStartOutput reads what an inner shim's start printed: a bootstrap
// result (containerd 2.x shims), or a bare address (runhcs, and shims of
// the version 2 API).
func parseStartOutput(out []byte) (string, int32, error) {
	text := strings.TrimSpace(string(out))
	if looksLikeAddress(text) {
		return text, 2, nil
	}
	var res bootapi.BootstrapResult
	if err := proto.Unmarshal(out, &res); err != nil || res.GetAddress() == "" {
		return "", 0, fmt.Errorf("unexpected start output %q", truncate(text, 200))
	}
	if p := res.GetProtocol(); p != "" && p != "ttrpc" {
		return "", 0, fmt.Errorf("inner shim speaks %s; the proxy speaks ttrpc", p)
	}
	v := res.GetVersion()
	if v == 0 {
		v = 2
	}
	if _, err := taskServiceName(v); err != nil {
		return "", 0, err
	}
	return res.GetAddress(), v, nil
}

func looksLikeAddress(s string) bool {
	return strings.HasPrefix(s, "unix://") || strings.HasPrefix(s, `\\.\pipe\`) || strings.HasPrefix(s, "/")
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// groupID is the ID the container's shim is grouped under, read from its
// spec's annotations as the runc shim and runhcs group: a CRI pod's
// containers share the pod's shim, and so its proxy.
func groupID(bundle, id string) string {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return id
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if json.Unmarshal(b, &spec) != nil {
		return id
	}
	for _, k := range []string{"io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id"} {
		if g, ok := spec.Annotations[k]; ok && g != "" {
			return g
		}
	}
	return id
}

// flagValue is a flag pkg/shim parsed (its flags are the process's).
func flagValue(name string) string {
	if f := flag.Lookup(name); f != nil {
		return f.Value.String()
	}
	return ""
}
