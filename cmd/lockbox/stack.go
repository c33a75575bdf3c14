package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"text/template"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
)

// The stack verbs: "docker stack deploy/ls/rm" for the part of a compose
// file that is Lockbox's (its secrets, and the services' references and
// placement). See stack_compose.go for the reading and stack_deploy.go
// for the writing.

func newStackCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "stack", Short: "Deploy the secrets and services of compose files, as docker stack deploy does"}
	cmd.AddCommand(newStackDeployCommand(), newStackLsCommand(), newStackRmCommand())
	return cmd
}

// stackConn reads the global connection flags that addAdminCommands
// put on the root command, so that the stack verbs reach the manager
// exactly as the other admin verbs do.
func stackConn(cmd *cobra.Command) (*connFlags, error) {
	f := cmd.Flags()
	c := &connFlags{}
	var errs [5]error
	c.host, errs[0] = f.GetString("host")
	c.caCert, errs[1] = f.GetString("tlscacert")
	c.cert, errs[2] = f.GetString("tlscert")
	c.key, errs[3] = f.GetString("tlskey")
	c.timeout, errs[4] = f.GetDuration("timeout")
	return c, errors.Join(errs[:]...)
}

func newStackDeployCommand() *cobra.Command {
	var files []string
	var prune, quiet, detach, registryAuth bool
	var resolveImage string
	cmd := &cobra.Command{
		Use:     "deploy [OPTIONS] STACK",
		Aliases: []string{"up"},
		Short:   "Deploy a new stack or update an existing stack: create its secrets and its services STACK_SERVICE",
		Long: `Deploy a new stack or update an existing stack, as docker stack deploy does for secrets.

Top-level secrets (file:, environment:, external: true) become secrets STACK_KEY (or their name:),
labelled ` + stackLabel + `=STACK; each compose service becomes the Lockbox service STACK_SERVICE
with its secret references and deploy.placement.constraints. Secret drivers and templating are
refused; configs: are ignored with a warning; image, ports and the rest are the container
runtime's (nerdctl compose) and ignored. A secret's data is immutable: a deploy whose file
changed an existing secret's data fails and names the secret. See docs/compose.md.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			stack := args[0]
			if err := checkStackName(stack); err != nil {
				return err
			}
			for _, f := range []string{"with-registry-auth", "resolve-image"} {
				if cmd.Flags().Changed(f) {
					return fmt.Errorf("--%s is about images: Lockbox runs no containers (nerdctl compose or another containerd client does), so drop it here", f)
				}
			}
			c, err := stackConn(cmd)
			if err != nil {
				return err
			}
			cf, err := readComposeFiles(files, cmd.InOrStdin())
			if err != nil {
				return err
			}
			if err := checkComposeText(cf); err != nil {
				return err
			}
			restore := routeComposeWarnings(cmd.ErrOrStderr())
			project, err := loadCompose(cmd.Context(), stack, cf, environMap())
			restore()
			if err != nil {
				return err
			}
			plan, err := planStack(stack, project, os.LookupEnv)
			if err != nil {
				return err
			}
			defer plan.wipe()
			for _, w := range plan.warnings {
				fmt.Fprintln(cmd.ErrOrStderr(), "lockbox: warning:", w)
			}
			out := cmd.OutOrStdout()
			if quiet {
				out = io.Discard
			}
			return c.run(cmd, func(ctx context.Context, cl adminapi.AdminClient) error {
				d := &stackDeployer{cl: cl, explain: c.explain, out: out, prune: prune}
				return d.deploy(ctx, plan)
			})
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVarP(&files, "compose-file", "c", nil, `Path to a Compose file, or "-" to read from stdin (repeatable: later files override earlier ones)`)
	fl.BoolVar(&prune, "prune", false, "Prune services that are no longer referenced")
	fl.BoolVarP(&quiet, "quiet", "q", false, "Suppress progress output")
	fl.BoolVarP(&detach, "detach", "d", true, "Accepted for docker's scripts: Lockbox has no tasks to wait for")
	fl.BoolVar(&registryAuth, "with-registry-auth", false, "docker's; refused: Lockbox runs no images")
	fl.StringVar(&resolveImage, "resolve-image", "", "docker's; refused: Lockbox runs no images")
	_ = fl.MarkHidden("with-registry-auth")
	_ = fl.MarkHidden("resolve-image")
	return cmd
}

// environMap is the process environment, which compose interpolates
// ${VAR} from, as docker stack deploy does (no .env file is read).
func environMap() map[string]string {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

// routeComposeWarnings sends the compose library's warnings (an unset
// variable, the obsolete version: attribute) to w in the CLI's shape,
// until the returned function puts logrus back as it was.
func routeComposeWarnings(w io.Writer) (restore func()) {
	l := logrus.StandardLogger()
	out, format, level := l.Out, l.Formatter, l.GetLevel()
	l.SetOutput(w)
	l.SetFormatter(composeLogFormatter{})
	l.SetLevel(logrus.WarnLevel)
	return func() {
		l.SetOutput(out)
		l.SetFormatter(format)
		l.SetLevel(level)
	}
}

type composeLogFormatter struct{}

func (composeLogFormatter) Format(e *logrus.Entry) ([]byte, error) {
	return []byte("lockbox: " + e.Level.String() + ": " + e.Message + "\n"), nil
}

// stackRow is a stack as ls shows it; Services is a string, as in
// docker's JSON.
type stackRow struct {
	Name     string
	Services string
}

func newStackLsCommand() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:     "ls [OPTIONS]",
		Aliases: []string{"list"},
		Short:   "List stacks",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := stackConn(cmd)
			if err != nil {
				return err
			}
			return c.run(cmd, func(ctx context.Context, cl adminapi.AdminClient) error {
				resp, err := cl.ListServices(ctx, &adminapi.ListServicesRequest{})
				if err != nil {
					return err
				}
				count := map[string]int{}
				for _, s := range resp.Services {
					if ns, ok := s.GetSpec().GetLabels()[stackLabel]; ok {
						count[ns]++
					}
				}
				names := make([]string, 0, len(count))
				for ns := range count {
					names = append(names, ns)
				}
				slices.SortFunc(names, func(a, b string) int {
					if naturalLess(a, b) {
						return -1
					}
					if naturalLess(b, a) {
						return 1
					}
					return 0
				})
				rows := make([]stackRow, 0, len(names))
				for _, ns := range names {
					rows = append(rows, stackRow{Name: ns, Services: strconv.Itoa(count[ns])})
				}
				return printStacks(cmd.OutOrStdout(), format, rows)
			})
		},
	}
	cmd.Flags().StringVar(&format, "format", "", "output format: table, json, or a Go template such as '{{.Name}}'")
	return cmd
}

// printStacks prints docker's "stack ls": NAME and SERVICES. Docker's
// ORCHESTRATOR column went with its Kubernetes support (docker 23); a
// Lockbox stack is always the same kind, so the column would say nothing.
// --format is docker's: "table" (the default), "json" (one object per
// line), "table TEMPLATE" (a header, aligned), or a TEMPLATE per stack;
// \t and \n in a template are a tab and a newline.
func printStacks(w io.Writer, format string, rows []stackRow) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		for _, r := range rows {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	}
	text, isTable := format, format == "" || format == "table"
	if isTable {
		text = "{{.Name}}\t{{.Services}}"
	} else if rest, ok := strings.CutPrefix(format, "table "); ok {
		text, isTable = rest, true
	}
	text = strings.NewReplacer(`\t`, "\t", `\n`, "\n").Replace(strings.TrimSpace(text))
	tmpl, err := template.New("format").Funcs(template.FuncMap{"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	}}).Parse(text + "\n")
	if err != nil {
		return fmt.Errorf("--format: %w", err)
	}
	out := w
	var tw *tabwriter.Writer
	if isTable {
		tw = tabwriter.NewWriter(w, 10, 1, 3, ' ', 0) // docker's table writer
		out = tw
		if err := tmpl.Execute(out, stackRow{Name: "NAME", Services: "SERVICES"}); err != nil {
			return fmt.Errorf("--format: %w", err)
		}
	}
	for _, r := range rows {
		if err := tmpl.Execute(out, r); err != nil {
			return fmt.Errorf("--format: %w", err)
		}
	}
	if tw != nil {
		return tw.Flush()
	}
	return nil
}

func newStackRmCommand() *cobra.Command {
	var detach bool
	cmd := &cobra.Command{
		Use:     "rm [OPTIONS] STACK [STACK...]",
		Aliases: []string{"remove", "down"},
		Short:   "Remove stacks: their services, then the secrets their deploys created",
		Long: "Remove stacks: their services, then the secrets their deploys created (labelled " + stackLabel + "=STACK).\n" +
			"External secrets are never removed. A secret still referenced by a service outside the stack is kept:\n" +
			"the manager refuses to remove a secret in use, the refusal is printed, and the exit status is non-zero, as with docker.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := stackConn(cmd)
			if err != nil {
				return err
			}
			return c.run(cmd, func(ctx context.Context, cl adminapi.AdminClient) error {
				return removeStacks(ctx, cl, c.explain, cmd.OutOrStdout(), cmd.ErrOrStderr(), args)
			})
		},
	}
	cmd.Flags().BoolVarP(&detach, "detach", "d", true, "Accepted for docker's scripts: Lockbox has no tasks to wait for")
	return cmd
}

// removeStacks is docker's stack rm: services first (so that their
// references go), then the stack's secrets; a failure is reported and the
// rest still removed.
func removeStacks(ctx context.Context, cl adminapi.AdminClient, explain func(error) error, out, errw io.Writer, stacks []string) error {
	var failed []error
	for _, ns := range stacks {
		services, err := stackServices(ctx, cl, ns)
		if err != nil {
			return explain(err)
		}
		secrets, err := stackSecrets(ctx, cl, ns)
		if err != nil {
			return explain(err)
		}
		if len(services)+len(secrets) == 0 {
			fmt.Fprintln(errw, "Nothing found in stack:", ns)
			continue
		}
		bad := false
		for _, s := range services {
			fmt.Fprintln(out, "Removing service", s.GetSpec().GetName())
			if _, err := cl.RemoveService(ctx, &adminapi.RemoveServiceRequest{NameOrId: s.Id}); err != nil {
				bad = true
				fmt.Fprintf(errw, "Failed to remove service %s: %v\n", s.Id, explain(err))
			}
		}
		for _, s := range secrets {
			fmt.Fprintln(out, "Removing secret", s.GetSpec().GetName())
			if _, err := cl.RemoveSecret(ctx, &adminapi.RemoveSecretRequest{NameOrId: s.Id}); err != nil {
				bad = true
				fmt.Fprintf(errw, "Failed to remove secret %s: %v\n", s.Id, explain(err))
			}
		}
		if bad {
			failed = append(failed, errors.New("failed to remove some resources from stack: "+ns))
		}
	}
	return errors.Join(failed...)
}
