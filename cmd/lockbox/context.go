package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Contexts, as docker's: a named manager address and its TLS files, so
// that -H and the TLS flags are not repeated on every command. The store
// is context_store.go; this file is the verbs and the choice of the
// context a command uses.

// addContextFlag puts --context on the root (no -c shorthand: stack
// deploy's -c is the compose file, as in docker) and, before a command
// that talks to a manager runs, replaces the connection flags with the
// chosen context's. The stack and version verbs read those flags back
// by name, so they see the context too.
func addContextFlag(root *cobra.Command, c *connFlags) {
	var name string
	root.PersistentFlags().StringVar(&name, "context", "", "context to use to reach the manager (overrides LOCKBOX_HOST, LOCKBOX_CONTEXT and 'lockbox context use'; see 'lockbox context ls')")
	root.RegisterFlagCompletionFunc("context", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		names := []string{defaultContext}
		if st, err := contextStoreFromEnv(); err == nil {
			more, _ := st.list()
			names = append(names, more...)
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	})
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if !talksToManager(cmd) {
			return nil
		}
		return c.useContext(name, root.PersistentFlags(), os.Getenv)
	}
}

// talksToManager says whether cmd reaches a manager through the connection
// flags: the daemons, the agent's own socket, the context verbs and the
// shell helpers do not, and must not fail on a broken context.
func talksToManager(cmd *cobra.Command) bool {
	top := cmd
	for top.HasParent() && top.Parent().HasParent() {
		top = top.Parent()
	}
	switch top.Name() {
	case "manager", "agent", "context", "completion", "help", cobra.ShellCompRequestCmd, cobra.ShellCompNoDescRequestCmd:
		return false
	}
	return top.HasParent()
}

// contextChoice is the context a command uses and what chose it, for the
// messages.
type contextChoice struct {
	name string
	by   string
}

// chooseContext applies docker's precedence: --context, then -H, then
// LOCKBOX_HOST, then LOCKBOX_CONTEXT, then the config file's current
// context, then the default context. -H and LOCKBOX_HOST choose the
// default context, which is the host and TLS flags as given.
func chooseContext(flagName string, hostFlag bool, getenv func(string) string) (contextChoice, error) {
	switch {
	case flagName != "" && hostFlag:
		return contextChoice{}, errors.New("conflicting options: either specify --host or --context, not both")
	case flagName != "":
		return contextChoice{flagName, "--context"}, nil
	case hostFlag:
		return contextChoice{defaultContext, "-H"}, nil
	case getenv(hostEnv) != "":
		return contextChoice{defaultContext, hostEnv}, nil
	case getenv(contextEnv) != "":
		return contextChoice{getenv(contextEnv), contextEnv}, nil
	}
	st, err := openContextStore(getenv)
	if err != nil {
		// No home and no LOCKBOX_CONFIG: nothing can have been stored.
		return contextChoice{defaultContext, ""}, nil
	}
	cur, err := st.current()
	if err != nil {
		return contextChoice{}, err
	}
	if cur == "" || cur == defaultContext {
		return contextChoice{defaultContext, ""}, nil
	}
	return contextChoice{cur, "the config file " + st.configPath()}, nil
}

// useContext sets c from the chosen context. The default context leaves
// the flags as given; a stored one replaces host and TLS files, and TLS
// flags given beside it are refused rather than silently dropped.
func (c *connFlags) useContext(flagName string, flags *pflag.FlagSet, getenv func(string) string) error {
	ch, err := chooseContext(flagName, flags.Changed("host"), getenv)
	if err != nil || ch.name == defaultContext {
		return err
	}
	st, err := openContextStore(getenv)
	if err != nil {
		return err
	}
	m, err := st.get(ch.name)
	if err != nil {
		if ch.by == contextEnv || ch.by == "--context" {
			return fmt.Errorf("%w (chosen by %s; see 'lockbox context ls')", err, ch.by)
		}
		return fmt.Errorf("current %w (set in %s): 'lockbox context use default' goes back to the local socket", err, ch.by)
	}
	for _, f := range []string{"tlscacert", "tlscert", "tlskey"} {
		if flags.Changed(f) {
			return fmt.Errorf("conflicting options: --%s with context %q, which names its own TLS files; give the TLS flags with -H, or create another context", f, m.Name)
		}
	}
	c.host = m.Host
	if m.TLS == nil {
		return nil
	}
	for _, p := range []string{m.TLS.CA, m.TLS.Cert, m.TLS.Key} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("context %q: TLS file: %w (issue new admin credentials into %s with 'lockbox admin-credentials create --dir', or recreate the context)", m.Name, err, filepath.Dir(p))
		}
	}
	c.caCert, c.cert, c.key = m.TLS.CA, m.TLS.Cert, m.TLS.Key
	return nil
}

// currentContextName is the context a context verb shows as current: the
// one a manager command would use now.
func currentContextName(cmd *cobra.Command) (string, error) {
	name, err := cmd.Flags().GetString("context")
	if err != nil {
		return "", err
	}
	ch, err := chooseContext(name, cmd.Flags().Changed("host"), os.Getenv)
	return ch.name, err
}

func newContextCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "context",
		Short: "Manage contexts: named managers and their TLS files, so that -H and --tls* are not repeated",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newContextCreateCommand(), newContextUpdateCommand(), newContextLsCommand(), newContextUseCommand(),
		newContextInspectCommand(), newContextRmCommand(), newContextShowCommand())
	return cmd
}

func contextStoreFromEnv() (*contextStore, error) { return openContextStore(os.Getenv) }
