package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
)

func newKEKCommand(c *connFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "key-encryption-key",
		Aliases: []string{"kek"},
		Short:   "Manage the key-encryption key of a cluster without autolock",
		Args:    cobra.NoArgs,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "rotate",
		Short: "Replace the key-encryption key (every manager rewrites its kek file)",
		Long: `Replace the key-encryption key that wraps the data keys, on a cluster without
autolock (with autolock, rotate the unlock key: 'lockbox unlock-key --rotate').

Every running manager follows and rewrites its DATA/kek file. No secret is
re-sealed. For ten minutes the old key file, with a copy of etcd's data, still
leads to the new key (so that every manager follows); a manager down longer
than that needs a copy of the new kek file from a running manager.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.run(cmd, func(ctx context.Context, cl adminapi.AdminClient) error {
				if _, err := cl.RotateKeyEncryptionKey(ctx, &adminapi.RotateKeyEncryptionKeyRequest{}); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "Rotated the key-encryption key; every manager rewrites its key file.")
				return nil
			})
		},
	})
	return cmd
}
