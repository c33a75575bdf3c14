package main

import (
	"context"
	"io"
	"time"

	"github.com/spf13/cobra"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/cmd/lockbox/internal/versioninfo"
	"github.com/lockbox-project/lockbox/internal/buildinfo"
)

func serverVersion(r *adminapi.VersionResponse) *versioninfo.Info {
	i := buildinfo.Info{Version: r.GetVersion(), Commit: r.GetCommit(), Modified: r.GetModified()}
	return &versioninfo.Info{Version: i.Version, GitCommit: i.ShortCommit(), GoVersion: r.GetGoVersion(), Os: r.GetOs(), Arch: r.GetArch(), BuildTime: r.GetBuildTime()}
}

// newVersionCommand is docker version's shape: a Client section always,
// a Server section from the manager -H names; a manager that does not
// answer is an error (exit 1) after the Client section, as with docker.
func newVersionCommand() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "version [--format TEMPLATE|json]",
		Short: "Show the version of the lockbox client and of the manager it talks to",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := connFlagsOf(cmd)
			if err != nil {
				return err
			}
			out := versioninfo.Output{Client: versioninfo.Client()}
			// A short wait: version is what one runs to see whether the
			// manager is there at all.
			if c.timeout > 10*time.Second {
				c.timeout = 10 * time.Second
			}
			serr := c.run(cmd, func(ctx context.Context, cl adminapi.AdminClient) error {
				r, err := cl.Version(ctx, &adminapi.VersionRequest{})
				if err != nil {
					return err
				}
				out.Server = serverVersion(r)
				return nil
			})
			if err := printVersion(cmd.OutOrStdout(), format, out); err != nil {
				return err
			}
			return serr
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", "format the output with a Go template, or json")
	return cmd
}

// connFlagsOf reads the global connection flags (addAdminCommands
// declares them on the root) from cmd.
func connFlagsOf(cmd *cobra.Command) (*connFlags, error) {
	f := cmd.Flags()
	c := &connFlags{}
	var err error
	for _, s := range []struct {
		name string
		to   *string
	}{{"host", &c.host}, {"tlscacert", &c.caCert}, {"tlscert", &c.cert}, {"tlskey", &c.key}} {
		if *s.to, err = f.GetString(s.name); err != nil {
			return nil, err
		}
	}
	if c.timeout, err = f.GetDuration("timeout"); err != nil {
		return nil, err
	}
	return c, nil
}

func printVersion(w io.Writer, format string, v versioninfo.Output) error {
	return versioninfo.Print(w, format, v, func(w io.Writer, format string, v versioninfo.Output) error {
		return executeTemplate(w, format, []any{v})
	})
}
