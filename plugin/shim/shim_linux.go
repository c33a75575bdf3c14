//go:build linux

package shim

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"

	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/manager"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/task"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/log"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"
)

// RuntimeType is the runtime type containerd knows the shim by; containerd
// runs it as containerd-shim-lockbox-v2 found on its PATH.
const RuntimeType = "io.containerd.lockbox.v2"

// Main runs the shim (every mode pkg/shim knows: start, delete, -info and
// the long-lived server) and does not return.
func Main() {
	register(AgentSocket(os.Getenv))
	shim.RunShim(context.Background(), &lockboxManager{Shim: manager.NewShimManager(RuntimeType)})
}

// register registers the wrapped task service as the shim's TTRPC "task"
// plugin, as the runc shim's task/plugin package does for its own.
func register(socket string) {
	registry.Register(&plugin.Registration{
		Type:     plugins.TTRPCPlugin,
		ID:       "task",
		Requires: []plugin.Type{plugins.EventPlugin, plugins.InternalPlugin},
		InitFn: func(ic *plugin.InitContext) (any, error) {
			// pkg/shim's setRuntime has run by now, in this process.
			collectAtGoDefault(os.Getenv)
			pp, err := ic.GetByID(plugins.EventPlugin, "publisher")
			if err != nil {
				return nil, err
			}
			ss, err := ic.GetByID(plugins.InternalPlugin, "shutdown")
			if err != nil {
				return nil, err
			}
			inner, err := task.NewTaskService(ic.Context, pp.(shim.Publisher), ss.(shutdown.Service))
			if err != nil {
				return nil, err
			}
			return wrap(inner, socket), nil
		},
	})
}

// wrap returns the wrapper around inner, which keeps inner's TTRPC
// interceptor when it has one (the runc service has one under the
// shim_tracing build tag): pkg/shim looks for it on the plugin instance.
func wrap(inner any, socket string) any {
	s := newService(optionsService{inner.(taskService)}, socket)
	if o, ok := inner.(shim.TTRPCServerUnaryOptioner); ok {
		return &interceptingService{service: s, inner: o}
	}
	return s
}

type interceptingService struct {
	*service
	inner shim.TTRPCServerUnaryOptioner
}

func (s *interceptingService) UnaryServerInterceptor() ttrpcInterceptor {
	return s.inner.UnaryServerInterceptor()
}

// optionsService hands the runc service runc's options at create,
// whatever form containerd sent them in (options_linux.go).
type optionsService struct {
	taskService
}

func (s optionsService) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	o, err := runcOptionsAny(r.Options)
	if err != nil {
		return nil, fmt.Errorf("lockbox: container %s: %w", r.ID, err)
	}
	r.Options = o
	return s.taskService.Create(ctx, r)
}

// lockboxManager is the runc shim manager with runtime options translated
// for its start and -info, and a release in Stop. Stop
// runs in a short-lived process of its own after a delete, and is the only
// cleanup when the shim died: it releases from the record in the bundle.
type lockboxManager struct {
	shim.Shim
}

func (m *lockboxManager) Start(ctx context.Context, p *bootapi.BootstrapParams) (*bootapi.BootstrapResult, error) {
	collectAtGoDefault(os.Getenv)
	if err := translateBootstrap(p); err != nil {
		return nil, err
	}
	return m.Shim.Start(ctx, p)
}

func (m *lockboxManager) Info(ctx context.Context, optionsR io.Reader) (*types.RuntimeInfo, error) {
	r, err := translateInfo(optionsR)
	if err != nil {
		return nil, err
	}
	return m.Shim.Info(ctx, r)
}

func (m *lockboxManager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	collectAtGoDefault(os.Getenv)
	processTracer.Mark(id, "stop")
	defer processTracer.Mark(id, "stop-done")
	st, err := m.Shim.Stop(ctx, id)
	// The same bundle the runc manager's Stop works in: a sibling of the
	// cwd containerd starts it in.
	if cwd, werr := os.Getwd(); werr == nil {
		bundle := filepath.Join(filepath.Dir(cwd), id)
		if rerr := releaseFromDisk(ctx, AgentSocket(os.Getenv), bundle); rerr != nil {
			log.G(ctx).WithError(rerr).WithField("id", id).Warn("lockbox: release in shim stop")
		}
	}
	return st, err
}

// collectAtGoDefault undoes pkg/shim's debug.SetGCPercent(40) (its
// setRuntime, run before any of the shim's own code in each of its
// processes): the shim collects garbage at Go's default, GOGC 100, or at
// what GOGC in its environment says. At 40 the heap's smallest goal is
// 1.6 MB, and a container's whole lifecycle, which allocates about 1.5 MB
// in this shim, went through two or three collections: 5.5 ms of the
// machine's CPU a container, 2.0 ms of a plain container's lifecycle and
// 3.6 ms of a claiming one's (the same build at 40 and at 100 in one
// alternation of BenchmarkShimLifecycle, docs/performance.md), and a
// claim's few dozen kilobytes more brought one into the container's exit. At 100 it goes
// through none or one, and the shim's resident memory at the container's
// delete was lower, not higher (16.3 against 16.9 MB: the collector's own
// pages); pkg/shim still forces a collection and returns freed memory to
// the system every 30 s, which bounds what a long-lived shim keeps.
func collectAtGoDefault(getenv func(string) string) {
	debug.SetGCPercent(gcPercent(getenv("GOGC")))
}

// gcPercent is the GC percentage GOGC asks for, as the Go runtime reads
// it ("off": never; unset or unreadable: 100).
func gcPercent(gogc string) int {
	if gogc == "off" {
		return -1
	}
	if n, err := strconv.Atoi(gogc); err == nil {
		return n
	}
	return 100
}
