package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
)

// eachArg calls do for every argument, goes on past failures like docker's
// multi-object verbs, and returns every failure, explained.
func (c *connFlags) eachArg(ctx context.Context, args []string, do func(string) error) error {
	var failed errs
	for _, a := range args {
		if err := do(a); err != nil {
			failed = append(failed, c.explain(err))
		}
	}
	return failed.err()
}

// newInspectCommand is the inspect verb of one kind of object: get fetches
// one by name or ID and returns its printable view.
func newInspectCommand(c *connFlags, kind, short string, get func(ctx context.Context, cl adminapi.AdminClient, nameOrID string) (any, error)) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   fmt.Sprintf("inspect [OPTIONS] %s...", strings.ToUpper(kind)),
		Short: short,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.run(cmd, func(ctx context.Context, cl adminapi.AdminClient) error {
				var out []any
				failed := c.eachArg(ctx, args, func(a string) error {
					v, err := get(ctx, cl, a)
					if err == nil {
						out = append(out, v)
					}
					return err
				})
				if err := printInspect(cmd.OutOrStdout(), format, out); err != nil {
					return err
				}
				return failed
			})
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", "Go template applied to each "+kind)
	return cmd
}

// newRmCommand is the rm verb of one kind of object; it prints each
// argument removed.
func newRmCommand(c *connFlags, kind, short string, rm func(ctx context.Context, cl adminapi.AdminClient, nameOrID string) error) *cobra.Command {
	return &cobra.Command{
		Use:     fmt.Sprintf("rm [OPTIONS] %s...", strings.ToUpper(kind)),
		Aliases: []string{"remove"},
		Short:   short,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.run(cmd, func(ctx context.Context, cl adminapi.AdminClient) error {
				return c.eachArg(ctx, args, func(a string) error {
					if err := rm(ctx, cl, a); err != nil {
						return err
					}
					fmt.Fprintln(cmd.OutOrStdout(), a)
					return nil
				})
			})
		},
	}
}
