package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
)

func newDataKeyCommand(c *connFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "data-key",
		Short: "Manage the cluster's data encryption key",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "rotate",
		Short: "Seal every secret under a new data key (no downtime; the old key is dropped once nothing uses it)",
		Long: `Seal every secret under a new data key.

Managers keep serving while the secrets are re-sealed: each is rewritten in its
own etcd transaction, and the previous key stays readable until the last
secret sealed with it is rewritten. Use it after a manager's data dir or an
etcd backup may have been exposed together with its key file or unlock key.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.run(cmd, func(ctx context.Context, cl adminapi.AdminClient) error {
				resp, err := cl.RotateDataKey(ctx, &adminapi.RotateDataKeyRequest{})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Rotated the data key; %d sealed values re-sealed.\n", resp.GetResealed())
				return nil
			})
		},
	})
	return cmd
}
