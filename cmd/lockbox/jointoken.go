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
		Use:       "join-token [OPTIONS] worker|manager",
		Short:     "Show or rotate the token nodes join with",
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
					fmt.Fprintf(w, "To add a node to this cluster, run the following command on it:\n\n    lockbox agent --manager %s --token %s --state-dir /var/lib/lockbox/agent\n\n", strings.Join(addrs, ","), resp.Token)
				} else {
					// A joining manager needs one manager to join through.
					fmt.Fprintf(w, "To add a manager to this cluster, run the following command on it:\n\n    lockbox manager --data-dir /var/lib/lockbox-manager --join %s --token %s\n\n", addrs[0], resp.Token)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "only display the token")
	cmd.Flags().BoolVar(&rotate, "rotate", false, "replace the token; the old one stops working")
	return cmd
}

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
