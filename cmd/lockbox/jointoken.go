package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
)

func newJoinTokenCommand(c *connFlags) *cobra.Command {
	var quiet, rotate bool
	cmd := &cobra.Command{
		Use:   "join-token [OPTIONS] worker|manager",
		Short: "Show or rotate the token nodes join with",
		Long: `Show or rotate the token nodes join with.

A worker token can be used by any number of nodes (images, cloud-init,
autoscaling) until it is rotated with --rotate.

A manager token works for one manager join: the join replaces it, since a
joining manager receives the cluster's key-encryption key. Run
'lockbox join-token manager' again for each manager you add.`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"worker", "manager"},
		RunE: func(cmd *cobra.Command, args []string) error {
			var role types.NodeRole
			switch args[0] {
			case "worker":
				role = types.NodeRole_NODE_ROLE_WORKER
			case "manager":
				role = types.NodeRole_NODE_ROLE_MANAGER
			default:
				return fmt.Errorf("unknown role %q: want worker or manager", args[0])
			}
			return c.run(cmd, func(ctx context.Context, cl adminapi.AdminClient) error {
				resp, err := cl.GetJoinToken(ctx, &adminapi.GetJoinTokenRequest{Role: role, Rotate: rotate})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if quiet {
					fmt.Fprintln(w, resp.Token)
					return nil
				}
				if rotate {
					fmt.Fprintf(w, "Successfully rotated %s join token.\n\n", args[0])
				}
				addrs := joinAddrs(resp.Managers, c.host)
				if role == types.NodeRole_NODE_ROLE_WORKER {
					// An agent takes every manager: it fails over between them.
					fmt.Fprintf(w, "To add a node to this cluster, run the following command on it:\n\n    echo %s | lockbox agent --manager %s --token-file - --state-dir /var/lib/lockbox/agent\n\n", resp.Token, strings.Join(addrs, ","))
				} else {
					// A joining manager needs one manager to join through.
					fmt.Fprintf(w, "To add a manager to this cluster, run the following command on it:\n\n    echo %s | lockbox manager --data-dir /var/lib/lockbox-manager --join %s --token-file -\n\n", resp.Token, addrs[0])
					fmt.Fprint(w, managerTokenOnceHint)
				}
				fmt.Fprint(w, tokenFileHint)
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "only display the token")
	cmd.Flags().BoolVar(&rotate, "rotate", false, "replace the token; the old one stops working")
	return cmd
}

// tokenFileHint follows a printed join command: the token reaches the
// daemon through a file or stdin only, never its command line.
const tokenFileHint = `The token is read from standard input (echo is a shell builtin, so it never
shows in a process list). To start the daemon from a service manager, put the
token in a file only root can read and pass --token-file FILE instead; once
joined, the daemon needs neither the file nor the flag.

`

// managerTokenOnceHint follows a manager join command: the CA replaces
// the manager token at the join it is used for (manager/ca tokens.go).
const managerTokenOnceHint = `This token works for one manager join. For each further manager, run
'lockbox join-token manager' again for a new token.

`

// joinAddrs is the manager addresses to print in a join command: those the
// manager reported, else the one the CLI reached over TCP, else a
// placeholder the operator must fill in (an older manager over the socket).
func joinAddrs(managers []string, host string) []string {
	if len(managers) > 0 {
		return managers
	}
	if a, ok := strings.CutPrefix(host, "tcp://"); ok {
		return []string{a}
	}
	return []string{"MANAGER_ADDR"}
}
