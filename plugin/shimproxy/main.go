package shimproxy

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"
)

// innerDialTimeout bounds the serving proxy's connection to the inner
// shim, which its start has just started.
const innerDialTimeout = 10 * time.Second

// Main runs the proxy shim (every mode pkg/shim knows: start, delete,
// -info and the long-lived server) and does not return.
func Main() {
	register(AgentSocket(os.Getenv))
	shim.RunShim(context.Background(), NewManager(), runOpts...)
}

// register registers the proxy's task service as the shim's TTRPC "task"
// plugin. It is built when the serving process starts, in the bundle its
// start wrote the inner shim's address to.
func register(socket string) {
	registry.Register(&plugin.Registration{
		Type:     plugins.TTRPCPlugin,
		ID:       "task",
		Requires: []plugin.Type{plugins.InternalPlugin},
		InitFn: func(ic *plugin.InitContext) (any, error) {
			ss, err := ic.GetByID(plugins.InternalPlugin, "shutdown")
			if err != nil {
				return nil, err
			}
			sd := ss.(shutdown.Service)
			cwd, err := os.Getwd()
			if err != nil {
				return nil, err
			}
			st, err := readState(cwd)
			if err != nil {
				return nil, err
			}
			if st == nil {
				return nil, fmt.Errorf("no %s in %s: the proxy's start did not run here", stateFile, cwd)
			}
			// The proxy lives as long as the inner shim: when it goes, the
			// proxy goes too, and containerd's cleanup runs Stop.
			inner, closeInner, err := dialInner(st.InnerAddress, st.InnerVersion, innerDialTimeout, sd.Shutdown)
			if err != nil {
				return nil, err
			}
			svc := newService(inner, socket, dialLocalAPI, defaultPlatform(), sd.Shutdown)
			sd.RegisterCallback(func(context.Context) error {
				svc.cancel()
				closeInner()
				removeSocket(st.Address)
				return nil
			})
			return svc, nil
		},
	})
}
