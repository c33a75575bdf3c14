// Command lockbox-nri runs Lockbox's NRI plugin outside the agent: installed
// as /opt/nri/plugins/10-lockbox (containerd starts it) or run by hand. It
// reaches the agent through its local API socket.
//
//	lockbox-nri [--agent-socket PATH] [--nri-socket PATH] [--name lockbox] [--idx 10]
//
// Prefer "lockbox agent --nri", which serves the plugin in the agent's own
// process with one less hop.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/lockbox-project/lockbox/agent/localapi"
	"github.com/lockbox-project/lockbox/plugin/nri"
)

func main() {
	socket := os.Getenv("LOCKBOX_AGENT_SOCKET")
	if socket == "" {
		socket = localapi.DefaultSocket
	}
	agentSocket := flag.String("agent-socket", socket, "the lockbox agent's local API socket")
	nriSocket := flag.String("nri-socket", "", "containerd's NRI socket (default: NRI's, /var/run/nri/nri.sock)")
	name := flag.String("name", "", "plugin name (default lockbox; containerd passes it when it starts the plugin)")
	idx := flag.String("idx", "", "plugin index (default 10)")
	flag.Parse()

	// Fail early with a clear message if the agent is not there at all;
	// later failures redial.
	c := &redialer{socket: *agentSocket}
	if _, err := c.client(); err != nil {
		fmt.Fprintln(os.Stderr, "lockbox-nri:", err)
		os.Exit(1)
	}
	defer c.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// Name and index come from NRI's environment when containerd launches
	// the plugin from its plugin directory; flags override them.
	o := nri.Options{Socket: *nriSocket, Name: firstNonEmpty(*name, os.Getenv("NRI_PLUGIN_NAME")), Index: firstNonEmpty(*idx, os.Getenv("NRI_PLUGIN_IDX"))}
	if err := nri.New(c).Run(ctx, o); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "lockbox-nri:", err)
		os.Exit(1)
	}
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
