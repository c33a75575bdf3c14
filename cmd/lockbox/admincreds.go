package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
)

// The files admin-credentials create writes, named as the ones a manager
// without autolock writes at init under DATA/admin.
const (
	adminCAFile   = "ca.pem"
	adminCertFile = "cert.pem"
	adminKeyFile  = "key.pem"
)

func newAdminCredentialsCommand(c *connFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "admin-credentials",
		Short: "Issue and revoke short-lived admin certificates for tcp:// hosts",
		Args:  cobra.NoArgs,
	}
	var dir string
	var lifetime time.Duration
	create := &cobra.Command{
		Use:   "create --dir DIR [--lifetime 12h]",
		Short: "Issue an admin certificate and key into DIR (on the manager's admin socket only)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return errors.New("--dir is required: the directory to write ca.pem, cert.pem and key.pem into")
			}
			return c.run(cmd, func(ctx context.Context, cl adminapi.AdminClient) error {
				resp, err := cl.IssueAdminCredentials(ctx, &adminapi.IssueAdminCredentialsRequest{LifetimeSeconds: int64(lifetime / time.Second)})
				if err != nil {
					return err
				}
				defer clear(resp.KeyPem)
				if err := writeAdminCredentials(dir, resp); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s\nvalid until %s; revoke with 'lockbox admin-credentials rm %s'\nuse: --tlscacert %s --tlscert %s --tlskey %s\n",
					resp.Id, time.Unix(resp.NotAfterUnix, 0).UTC().Format(time.RFC3339), resp.Id,
					filepath.Join(dir, adminCAFile), filepath.Join(dir, adminCertFile), filepath.Join(dir, adminKeyFile))
				return nil
			})
		},
	}
	create.Flags().StringVar(&dir, "dir", "", "directory for ca.pem, cert.pem and key.pem (made 0700 if missing)")
	create.Flags().DurationVar(&lifetime, "lifetime", 0, "how long the certificate is valid (default 12h, at most 168h)")
	rm := &cobra.Command{
		Use:   "rm ID [ID...]",
		Short: "Revoke admin certificates by ID, on every manager",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, ids []string) error {
			return c.run(cmd, func(ctx context.Context, cl adminapi.AdminClient) error {
				var e errs
				for _, id := range ids {
					if _, err := cl.RevokeAdminCredentials(ctx, &adminapi.RevokeAdminCredentialsRequest{Id: id}); err != nil {
						e = append(e, fmt.Errorf("%s: %w", id, c.explain(err)))
						continue
					}
					fmt.Fprintln(cmd.OutOrStdout(), id)
				}
				return e.err()
			})
		},
	}
	cmd.AddCommand(create, rm)
	return cmd
}

// writeAdminCredentials writes the three files, each 0600 through a
// rename, into dir (made 0700 when missing, left as it is otherwise).
func writeAdminCredentials(dir string, resp *adminapi.IssueAdminCredentialsResponse) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("--dir: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{adminCAFile, resp.RootCaPem}, {adminCertFile, resp.CertificatePem}, {adminKeyFile, resp.KeyPem}} {
		tmp, err := os.CreateTemp(dir, ".tmp-*")
		if err != nil {
			return fmt.Errorf("--dir: %w", err)
		}
		err = tmp.Chmod(0o600)
		if err == nil {
			_, err = tmp.Write(f.data)
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), filepath.Join(dir, f.name))
		}
		if err != nil {
			os.Remove(tmp.Name())
			return fmt.Errorf("write %s: %w", filepath.Join(dir, f.name), err)
		}
	}
	return nil
}
