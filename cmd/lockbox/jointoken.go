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
				addr := "MANAGER_ADDR"
				if a, ok := strings.CutPrefix(c.host, "tcp://"); ok {
					addr = a
				}
				if role == types.NodeRole_NODE_ROLE_WORKER {
					fmt.Fprintf(w, "To add a node to this cluster, run the following command on it:\n\n    lockbox agent --manager %s --token %s --state-dir /var/lib/lockbox\n\n", addr, resp.Token)
				} else {
					fmt.Fprintf(w, "To add a manager to this cluster, run the following command on it:\n\n    lockbox manager --data-dir /var/lib/lockbox-manager --join %s --token %s\n\n", addr, resp.Token)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "only display the token")
	cmd.Flags().BoolVar(&rotate, "rotate", false, "replace the token; the old one stops working")
	return cmd
}
