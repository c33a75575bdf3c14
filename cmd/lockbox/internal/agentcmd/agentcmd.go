// Package agentcmd is the "lockbox agent" command: the node agent and what
// operates it on a node (ls, and the Windows service's install and
// uninstall). The full lockbox build and its node build (cmd/lockbox/node)
// both add it, so it links neither the manager nor etcd.
package agentcmd

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lockbox-project/lockbox/agent/daemon"
	"github.com/lockbox-project/lockbox/agent/localapi"
	"github.com/lockbox-project/lockbox/cmd/lockbox/internal/daemonflags"
)

// New returns the agent command, with its subcommands.
func New() *cobra.Command {
	var (
		o        daemon.Options
		managers string
		logs     daemonflags.Log
		token    daemonflags.Token
	)
	cmd := &cobra.Command{
		Use:   "agent --manager ADDR[,ADDR...] --token-file FILE|- --state-dir DIR [--socket PATH] [--nri]",
		Short: "Run the node agent (joins with the token in --token-file on its first start)",
		Long: `Run the Lockbox node agent.

The first start joins the cluster with a worker join token, read once from
--token-file FILE (or from standard input with --token-file -), and zeroed
once the node has joined; the node's key and certificate are kept in
--state-dir (0600) and later starts need no token. The token is never taken
from the command line or the environment: both stay readable by every local
user in /proc for as long as the agent runs.

The agent holds the grants of the services placed on this node in locked
memory only, keeps serving them when every manager is gone, and answers the
runtime adapters on a root-only unix socket.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := token.Check(cmd.Flags()); err != nil {
				return err
			}
			if err := logs.Check(); err != nil {
				return err
			}
			if err := daemon.Reexec(); err != nil {
				return err
			}
			// Read after the re-execution, which keeps stdin: the
			// token is read by the process that uses it, once.
			tok, err := token.Read(cmd.InOrStdin())
			if err != nil {
				return err
			}
			defer clear(tok)
			o.Token = tok
			for _, m := range strings.Split(managers, ",") {
				if m = strings.TrimSpace(m); m != "" {
					o.Managers = append(o.Managers, m)
				}
			}
			// Started by Windows' service control manager: no console, so
			// the log goes to the event log, and the SCM stops the agent.
			asService, err := daemon.IsService()
			if err != nil {
				return err
			}
			if asService {
				w, err := daemon.EventLogWriter(daemon.ServiceName)
				if err != nil {
					return err
				}
				defer w.Close()
				if o.Log, err = logs.Logger(w); err != nil {
					return err
				}
				return daemon.RunService(daemon.ServiceName, func(ctx context.Context) error { return daemon.Run(ctx, o) })
			}
			if o.Log, err = logs.Logger(cmd.ErrOrStderr()); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return daemon.Run(ctx, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&managers, "manager", "", "manager addresses, comma-separated (host:port)")
	token.Add(f, "file holding the worker join token (first start only)")
	f.StringVar(&o.StateDir, "state-dir", "/var/lib/lockbox/agent", "directory for the node's credentials and container records")
	f.StringVar(&o.Hostname, "hostname", "", "hostname the node joins with (default: the host's name; fixed at the first start, unique among workers)")
	f.StringVar(&o.Socket, "socket", localapi.DefaultSocket, "local API socket (a missing directory is made 0700; an existing one must be root's alone to write)")
	f.BoolVar(&o.NRI, "nri", false, "serve CRI containers as an NRI plugin of containerd")
	f.StringVar(&o.NRISocket, "nri-socket", "", "containerd's NRI socket (default: NRI's own default)")
	f.BoolVar(&o.RequireBitLocker, "require-bitlocker", false, "Windows: refuse to start unless the state directory's volume is BitLocker-protected")
	f.StringVar(&o.MetricsAddr, "metrics-addr", "", "serve Prometheus metrics on http://ADDR/metrics (plain HTTP, no authentication: bind to loopback or a management network; default off)")
	logs.Add(f)

	cmd.AddCommand(newLsCommand(), newInstallServiceCommand(), newUninstallServiceCommand())
	return cmd
}

// newLsCommand lists what the local agent has mounted, through its
// local API (root only).
func newLsCommand() *cobra.Command {
	var socket string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "ls [--socket PATH] [-q]",
		Short: "List the containers the local agent holds secrets mounts for",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if socket == "" {
				socket = os.Getenv("LOCKBOX_AGENT_SOCKET")
			}
			if socket == "" {
				socket = localapi.DefaultSocket
			}
			c, err := localapi.Dial(socket)
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			resp, err := c.List(ctx)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if quiet {
				for _, ct := range resp.GetContainers() {
					fmt.Fprintln(out, ct.GetId())
				}
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "CONTAINER\tSERVICE\tTARGETS")
			for _, ct := range resp.GetContainers() {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", ct.GetId(), ct.GetService(), strings.Join(ct.GetTargets(), ","))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "", "agent socket (default $LOCKBOX_AGENT_SOCKET or "+localapi.DefaultSocket+")")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "only container IDs")
	return cmd
}

// newInstallServiceCommand registers `lockbox agent` with the flags
// after "--" as a Windows service (automatic start, restarted by the SCM
// after a crash or a failed exit, logging to the event log).
func newInstallServiceCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "install-service -- AGENT-FLAGS...",
		Short: "Windows: register the agent, with the flags after --, as the lockbox-agent service",
		Long: `Register "lockbox agent AGENT-FLAGS..." as the Windows service lockbox-agent:
started automatically at boot, as LocalSystem, restarted by the service
control manager 5 s, 10 s and 30 s after a crash or a failed exit (the count
resets after a day), logging to the Windows event log (source lockbox-agent).
The service has no standard input: give the first start's join token as
--token-file FILE, not --token-file -. Start it with "sc.exe start
lockbox-agent".`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 0 {
				return fmt.Errorf("give the agent's flags after --: lockbox agent install-service -- --manager ADDR --state-dir DIR")
			}
			for i, a := range args {
				if a == "--token-file=-" || (a == "--token-file" && i+1 < len(args) && args[i+1] == "-") {
					return fmt.Errorf("--token-file -: a service has no standard input; give the token in a file (--token-file FILE)")
				}
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			if err := daemon.InstallService(daemon.ServiceName, exe, append([]string{"agent"}, args...)); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "installed service %s; start it with: sc.exe start %s\n", daemon.ServiceName, daemon.ServiceName)
			return nil
		},
	}
}

// newUninstallServiceCommand stops and removes the Windows service.
func newUninstallServiceCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "uninstall-service",
		Short: "Windows: stop and remove the lockbox-agent service",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return daemon.UninstallService(daemon.ServiceName)
		},
	}
}
