package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// The context verbs: docker context create/ls/use/inspect/rm/show.

// defaultContextDescription is docker's, with Lockbox's variable.
const defaultContextDescription = "Current " + hostEnv + " based configuration"

// contextFlags are the connection flags of create and update: the names
// of the global ones, so that a command line's connection flags become a
// context by putting 'context create NAME' before them.
type contextFlags struct {
	m         contextMeta
	tlsDir    string
	tls       contextTLS
	dockerOpt string
}

func (cf *contextFlags) add(f *pflag.FlagSet) {
	f.StringVar(&cf.m.Description, "description", "", "description of the context")
	f.StringVarP(&cf.m.Host, "host", "H", "", "manager: unix://PATH or tcp://HOST:PORT")
	f.StringVar(&cf.tlsDir, "tls-dir", "", "directory with ca.pem, cert.pem and key.pem, as 'lockbox admin-credentials create --dir' writes")
	f.StringVar(&cf.tls.CA, "tlscacert", "", "CA certificate that signed the manager's certificate")
	f.StringVar(&cf.tls.Cert, "tlscert", "", "admin client certificate")
	f.StringVar(&cf.tls.Key, "tlskey", "", "admin client key")
	f.StringVar(&cf.dockerOpt, "docker", "", "docker's endpoint option: not used by Lockbox, see -H and --tls-dir")
	f.MarkHidden("docker")
}

func (cf *contextFlags) checkDocker() error {
	if cf.dockerOpt != "" {
		return fmt.Errorf("--docker: a Lockbox context has one endpoint, the manager: give its parts as flags, -H HOST --tlscacert CA --tlscert CERT --tlskey KEY (or --tls-dir DIR), for %q", cf.dockerOpt)
	}
	return nil
}

// warnOpenKey says when the context's key file can be read by others:
// the context does not copy it, so its mode is the operator's to fix.
func warnOpenKey(w io.Writer, m *contextMeta) {
	if m.TLS == nil || runtime.GOOS == "windows" {
		return
	}
	if fi, err := os.Stat(m.TLS.Key); err == nil && fi.Mode().Perm()&0o077 != 0 {
		fmt.Fprintf(w, "Warning: %s can be read by other users (mode %#o): chmod 600 it\n", m.TLS.Key, fi.Mode().Perm())
	}
}

func newContextCreateCommand() *cobra.Command {
	var cf contextFlags
	cmd := &cobra.Command{
		Use:   "create [OPTIONS] CONTEXT",
		Short: "Create a context: a manager address and its admin TLS files",
		Long: `Create a context: a manager address (-H, as on any command) and, for tcp://, the admin
certificate, key and CA: --tls-dir DIR for the ca.pem, cert.pem and key.pem that
'lockbox admin-credentials create --dir DIR' writes, or --tlscacert, --tlscert and --tlskey.

The files are referenced by absolute path, not copied: re-issuing short-lived admin credentials
into the same DIR keeps the context working, and no second copy of an admin key is made.`,
		Example: `  lockbox admin-credentials create --dir ~/.lockbox/prod-admin   # on the manager, as root
  lockbox context create prod -H tcp://mgr1:4242 --tls-dir ~/.lockbox/prod-admin
  lockbox context use prod`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cf.checkDocker(); err != nil {
				return err
			}
			m := cf.m
			m.Name = args[0]
			if err := checkContextName(m.Name); err != nil {
				return err
			}
			if err := buildContext(&m, cf.tlsDir, cf.tls); err != nil {
				return err
			}
			st, err := contextStoreFromEnv()
			if err != nil {
				return err
			}
			if err := st.create(&m); err != nil {
				return err
			}
			warnOpenKey(cmd.ErrOrStderr(), &m)
			fmt.Fprintln(cmd.OutOrStdout(), m.Name)
			fmt.Fprintf(cmd.ErrOrStderr(), "Successfully created context %q\n", m.Name)
			return nil
		},
	}
	cf.add(cmd.Flags())
	return cmd
}

func newContextUpdateCommand() *cobra.Command {
	var cf contextFlags
	cmd := &cobra.Command{
		Use:   "update [OPTIONS] CONTEXT",
		Short: "Change a context's description, host or TLS files (the flags given replace the stored ones)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cf.checkDocker(); err != nil {
				return err
			}
			if args[0] == defaultContext {
				return fmt.Errorf("context %q cannot be updated: it is -H, LOCKBOX_HOST or the local socket", defaultContext)
			}
			st, err := contextStoreFromEnv()
			if err != nil {
				return err
			}
			m, err := st.get(args[0])
			if err != nil {
				return err
			}
			f := cmd.Flags()
			if f.Changed("description") {
				m.Description = cf.m.Description
			}
			if f.Changed("host") {
				m.Host = cf.m.Host
			}
			// New TLS flags replace the whole set; without them the stored
			// files are checked again against the (maybe new) host.
			tlsDir, t := cf.tlsDir, cf.tls
			if tlsDir == "" && t == (contextTLS{}) && m.TLS != nil && strings.HasPrefix(m.Host, "tcp://") {
				t = *m.TLS
			}
			m.TLS = nil
			if err := buildContext(m, tlsDir, t); err != nil {
				return err
			}
			if err := st.update(m); err != nil {
				return err
			}
			warnOpenKey(cmd.ErrOrStderr(), m)
			fmt.Fprintln(cmd.OutOrStdout(), m.Name)
			fmt.Fprintf(cmd.ErrOrStderr(), "Successfully updated context %q\n", m.Name)
			return nil
		},
	}
	cf.add(cmd.Flags())
	return cmd
}

// buildContext checks the host and completes m's TLS files from --tls-dir
// or the three TLS flags, made absolute: a relative path would mean
// another file from another directory.
func buildContext(m *contextMeta, tlsDir string, t contextTLS) error {
	if m.Host == "" {
		return errors.New("-H/--host is required: unix://PATH or tcp://HOST:PORT")
	}
	scheme, _, err := parseHost(m.Host)
	if err != nil {
		return err
	}
	some := t.CA != "" || t.Cert != "" || t.Key != ""
	switch {
	case tlsDir != "" && some:
		return errors.New("give either --tls-dir or --tlscacert, --tlscert and --tlskey, not both")
	case tlsDir != "":
		t = contextTLS{CA: filepath.Join(tlsDir, adminCAFile), Cert: filepath.Join(tlsDir, adminCertFile), Key: filepath.Join(tlsDir, adminKeyFile)}
	}
	have := tlsDir != "" || some
	if scheme == "unix" {
		if have {
			return errors.New("TLS files are for tcp:// hosts; the unix socket is authorised by its owner")
		}
		return nil
	}
	if t.CA == "" || t.Cert == "" || t.Key == "" {
		return fmt.Errorf("-H %s: a tcp:// context needs --tls-dir DIR (from 'lockbox admin-credentials create --dir DIR' on the manager, as root) or all of --tlscacert, --tlscert and --tlskey", m.Host)
	}
	for _, p := range []*string{&t.CA, &t.Cert, &t.Key} {
		if *p, err = filepath.Abs(*p); err != nil {
			return err
		}
	}
	if err := checkContextTLS(&t); err != nil {
		return err
	}
	m.TLS = &t
	return nil
}

// contextRow is a context as ls prints it, with docker's field names but
// HOST for DOCKER ENDPOINT.
type contextRow struct {
	Name        string
	Description string
	Host        string
	Current     bool
	Error       string
}

func newContextLsCommand() *cobra.Command {
	var f listFlags
	cmd := &cobra.Command{
		Use:     "ls [OPTIONS]",
		Aliases: []string{"list"},
		Short:   "List contexts; the current one is marked with *",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cur, err := currentContextName(cmd)
			if err != nil {
				return err
			}
			st, err := contextStoreFromEnv()
			if err != nil {
				return err
			}
			names, err := st.list()
			if err != nil {
				return err
			}
			host, _ := cmd.Flags().GetString("host")
			t := &table{header: []string{"NAME", "DESCRIPTION", "HOST"}}
			rows := []contextRow{{Name: defaultContext, Description: defaultContextDescription, Host: host}}
			for _, n := range names {
				r := contextRow{Name: n}
				if m, err := st.get(n); err != nil {
					r.Error = err.Error()
				} else {
					r.Description, r.Host = m.Description, m.Host
				}
				rows = append(rows, r)
			}
			for i := range rows {
				r := &rows[i]
				r.Current = r.Name == cur
				name := r.Name
				if r.Current {
					name += " *"
				}
				if r.Error != "" {
					fmt.Fprintln(cmd.ErrOrStderr(), "warning:", r.Error)
				}
				t.add(r.Name, r, name, r.Description, r.Host)
			}
			return t.print(cmd.OutOrStdout(), f)
		},
	}
	cmd.Flags().BoolVarP(&f.quiet, "quiet", "q", false, "only show context names")
	cmd.Flags().StringVar(&f.format, "format", "table", "output format: table, json, 'table TEMPLATE' or a Go template such as '{{.Name}}'")
	return cmd
}

func newContextUseCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "use CONTEXT",
		Short: "Set the current context (written to the config file)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			st, err := contextStoreFromEnv()
			if err != nil {
				return err
			}
			if name != defaultContext {
				if _, err := st.get(name); err != nil {
					return err
				}
			}
			if err := st.setCurrent(name); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), name)
			fmt.Fprintf(cmd.ErrOrStderr(), "Current context is now %q\n", name)
			if os.Getenv(hostEnv) != "" && name != defaultContext {
				fmt.Fprintf(cmd.ErrOrStderr(), "Warning: %s environment variable overrides the active context. To use %q, either set the global --context flag, or unset %s environment variable.\n", hostEnv, name, hostEnv)
			}
			return nil
		},
	}
}

// contextView is what inspect shows: paths, never the files' content.
type contextView struct {
	Name        string
	Description string
	Host        string
	TLS         *contextTLS `json:",omitempty"`
	Storage     struct{ MetadataPath string }
}

func newContextInspectCommand() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "inspect [OPTIONS] [CONTEXT...]",
		Short: "Show contexts in detail (the current one without arguments); TLS files by path only",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				cur, err := currentContextName(cmd)
				if err != nil {
					return err
				}
				args = []string{cur}
			}
			st, err := contextStoreFromEnv()
			if err != nil {
				return err
			}
			var out []any
			var failed errs
			for _, n := range args {
				var v contextView
				if n == defaultContext {
					v.Name, v.Description = defaultContext, defaultContextDescription
					v.Host, _ = cmd.Flags().GetString("host")
					v.Storage.MetadataPath = "<IN MEMORY>"
				} else {
					m, err := st.get(n)
					if err != nil {
						failed = append(failed, err)
						continue
					}
					v.Name, v.Description, v.Host, v.TLS = m.Name, m.Description, m.Host, m.TLS
					v.Storage.MetadataPath = st.metaPath(n)
				}
				out = append(out, v)
			}
			if err := printInspect(cmd.OutOrStdout(), format, out); err != nil {
				return err
			}
			return failed.err()
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", "Go template applied to each context, or json")
	return cmd
}

func newContextRmCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm [OPTIONS] CONTEXT [CONTEXT...]",
		Aliases: []string{"remove"},
		Short:   "Remove contexts (the TLS files they name are left alone)",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := contextStoreFromEnv()
			if err != nil {
				return err
			}
			cur, err := st.current()
			if err != nil {
				return err
			}
			var failed errs
			for _, n := range args {
				if err := removeContext(st, n, cur, force); err != nil {
					failed = append(failed, err)
					continue
				}
				fmt.Fprintln(cmd.OutOrStdout(), n)
			}
			return failed.err()
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove the current context too (the default context becomes current)")
	return cmd
}

// removeContext removes one context; the current one only with force,
// and then the default context becomes current, as in docker.
func removeContext(st *contextStore, name, current string, force bool) error {
	if name == defaultContext {
		return fmt.Errorf("%s: context %q cannot be removed", name, name)
	}
	if name == current && !force {
		if _, err := st.get(name); err != nil {
			return err
		}
		return fmt.Errorf("context %q is in use, set -f flag to force remove", name)
	}
	if err := st.remove(name); err != nil {
		return err
	}
	if name == current {
		return st.setCurrent(defaultContext)
	}
	return nil
}

func newContextShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show",
		Short: "Print the name of the current context",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			name, err := currentContextName(cmd)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), name)
			return nil
		},
	}
}
