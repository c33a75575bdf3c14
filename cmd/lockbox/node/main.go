// Command lockbox, built from this directory, is the node build of
// lockbox: "lockbox agent" and "lockbox version", and nothing of the
// manager, etcd or the admin CLI. A node runs only the agent, and every
// package a binary links costs the agent memory for as long as it runs:
// their text is read in by their package initialisation and stays
// resident. The full build (cmd/lockbox) runs the same agent.
//
//	go build -o bin/node/lockbox ./cmd/lockbox/node
package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/template"

	"github.com/spf13/cobra"

	"github.com/lockbox-project/lockbox/cmd/lockbox/internal/agentcmd"
	"github.com/lockbox-project/lockbox/cmd/lockbox/internal/versioninfo"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "lockbox:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "lockbox",
		Short: "Docker-swarm-style secrets for containerd nodes (the node build: the agent alone)",
		Long: `Docker-swarm-style secrets for containerd nodes.

This is lockbox's node build: it runs the node agent (lockbox agent) and
prints its version. The manager and the commands that talk to it (secret,
service, node, stack, ...) are in the full lockbox build.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Any other command is the full build's: say so, rather than
		// cobra's "unknown command", whatever its flags. Set, Args makes
		// cobra hand the words to RunE instead of refusing them itself.
		Args:               cobra.ArbitraryArgs,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
				return cmd.Help()
			}
			return notInNodeBuild(args[0])
		},
	}
	root.AddCommand(agentcmd.New(), newVersionCommand())
	return root
}

// notInNodeBuild is the error for a command only the full build has, or
// for the admin CLI's global flags (-H, --tlscert, ...), which this build
// does not have either.
func notInNodeBuild(word string) error {
	what := fmt.Sprintf("%q is", word)
	if strings.HasPrefix(word, "-") {
		what = "the admin commands and their flags are"
	}
	return fmt.Errorf("%s not in this lockbox, the node build, which runs the agent alone (lockbox agent, lockbox version): run it with the full lockbox build, which has the manager and the admin commands", what)
}

// newVersionCommand is the full build's lockbox version without its
// Server section: this build has no manager to ask. A --format template
// runs with text/template's own functions only, not the admin CLI's
// docker-like ones (json, join, ...), which this build does not link.
func newVersionCommand() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "version [--format TEMPLATE|json]",
		Short: "Show the version of this lockbox",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := versioninfo.Output{Client: versioninfo.Client()}
			return versioninfo.Print(cmd.OutOrStdout(), format, out, executeTemplate)
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", "format the output with a Go template, or json")
	return cmd
}

// executeTemplate runs a --format template on v, with text/template's own
// functions.
func executeTemplate(w io.Writer, format string, v versioninfo.Output) error {
	tmpl, err := template.New("format").Parse(format)
	if err != nil {
		return fmt.Errorf("--format: template parsing error: %w", err)
	}
	if err := tmpl.Execute(w, v); err != nil {
		return fmt.Errorf("--format: template parsing error: %w", err)
	}
	_, err = fmt.Fprintln(w)
	return err
}
