package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/admin"
)

func newSecretCommand(c *connFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "secret", Short: "Manage secrets"}
	cmd.AddCommand(newSecretCreateCommand(c), newSecretLsCommand(c), newSecretInspectCommand(c), newSecretRmCommand(c))
	return cmd
}

func newSecretCreateCommand(c *connFlags) *cobra.Command {
	var labels []string
	cmd := &cobra.Command{
		Use:   "create [OPTIONS] NAME FILE|-",
		Short: "Create a secret from a file or from standard input (-)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			lbl, err := parseKeyValues("label", labels)
			if err != nil {
				return err
			}
			data, err := readSecretData(cmd.InOrStdin(), args[1])
			if err != nil {
				return err
			}
			defer clear(data)
			return c.run(cmd, func(ctx context.Context, cl adminapi.AdminClient) error {
				resp, err := cl.CreateSecret(ctx, &adminapi.CreateSecretRequest{
					Spec: &types.SecretSpec{Name: args[0], Labels: lbl},
					Data: data,
				})
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), resp.Secret.Id)
				return nil
			})
		},
	}
	cmd.Flags().StringArrayVarP(&labels, "label", "l", nil, "secret label KEY=VALUE (repeatable)")
	return cmd
}

// readSecretData reads the whole secret from path, or stdin for "-". It
// reads at most one byte past the limit so a huge file is refused without
// being loaded.
func readSecretData(stdin io.Reader, path string) ([]byte, error) {
	var r io.Reader = stdin
	name := "standard input"
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r, name = f, path
	}
	data, err := io.ReadAll(io.LimitReader(r, admin.MaxSecretSize+1))
	if err != nil {
		clear(data)
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(data) > admin.MaxSecretSize {
		clear(data)
		return nil, fmt.Errorf("%s holds more than %d bytes: a secret must be smaller than %d bytes (500 KiB)", name, admin.MaxSecretSize, admin.MaxSecretSize)
	}
	return data, nil
}

// secretRow is a secret as ls shows it (json and templates).
type secretRow struct {
	ID        string
	Name      string
	CreatedAt time.Time
	UpdatedAt time.Time
	Labels    map[string]string
	Size      int64
	Digest    string
}

// secretInspect is a secret as inspect shows it, in docker's shape. There
// is no data: the API never returns it.
type secretInspect struct {
	ID      string
	Version struct{ Index uint64 }
	CreatedAt,
	UpdatedAt time.Time
	Spec struct {
		Name   string
		Labels map[string]string
	}
	Size   int64
	Digest string
}

func inspectSecret(s *types.Secret) secretInspect {
	v := secretInspect{ID: s.Id, CreatedAt: timeOf(s.GetMeta().GetCreatedAt()), UpdatedAt: timeOf(s.GetMeta().GetUpdatedAt()), Size: s.Size, Digest: s.Digest}
	v.Version.Index = s.GetMeta().GetVersion()
	v.Spec.Name = s.GetSpec().GetName()
	v.Spec.Labels = nonNil(s.GetSpec().GetLabels())
	return v
}

func newSecretLsCommand(c *connFlags) *cobra.Command {
	var f listFlags
	cmd := &cobra.Command{
		Use:     "ls [OPTIONS]",
		Aliases: []string{"list"},
		Short:   "List secrets",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.run(cmd, func(ctx context.Context, cl adminapi.AdminClient) error {
				resp, err := cl.ListSecrets(ctx, &adminapi.ListSecretsRequest{})
				if err != nil {
					return err
				}
				sortByName(resp.Secrets, func(s *types.Secret) string { return s.GetSpec().GetName() })
				now := time.Now()
				t := &table{header: []string{"ID", "NAME", "CREATED", "UPDATED"}}
				for _, s := range resp.Secrets {
					row := secretRow{ID: s.Id, Name: s.GetSpec().GetName(), CreatedAt: timeOf(s.GetMeta().GetCreatedAt()),
						UpdatedAt: timeOf(s.GetMeta().GetUpdatedAt()), Labels: s.GetSpec().GetLabels(), Size: s.Size, Digest: s.Digest}
					t.add(s.Id, row, s.Id, row.Name, ago(row.CreatedAt, now), ago(row.UpdatedAt, now))
				}
				return t.print(cmd.OutOrStdout(), f)
			})
		},
	}
	f.add(cmd)
	return cmd
}

func newSecretInspectCommand(c *connFlags) *cobra.Command {
	return newInspectCommand(c, "secret", "Show secrets in detail (never their data)", func(ctx context.Context, cl adminapi.AdminClient, a string) (any, error) {
		resp, err := cl.GetSecret(ctx, &adminapi.GetSecretRequest{NameOrId: a})
		if err != nil {
			return nil, err
		}
		return inspectSecret(resp.Secret), nil
	})
}

func newSecretRmCommand(c *connFlags) *cobra.Command {
	return newRmCommand(c, "secret", "Remove secrets no service references", func(ctx context.Context, cl adminapi.AdminClient, a string) error {
		_, err := cl.RemoveSecret(ctx, &adminapi.RemoveSecretRequest{NameOrId: a})
		return err
	})
}
