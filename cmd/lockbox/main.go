// Command lockbox is the Lockbox CLI and its daemons: the manager that keeps
// secrets and the agent that serves them on a containerd node. Its node
// build, cmd/lockbox/node, is the agent alone.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/lockbox-project/lockbox/cmd/lockbox/internal/agentcmd"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "lockbox:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "lockbox",
		Short:         "Docker-swarm-style secrets for containerd nodes",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	addAdminCommands(root)
	root.AddCommand(newStackCommand())
	addManagerCommand(root)
	root.AddCommand(agentcmd.New())
	root.AddCommand(newVersionCommand())
	return root
}
