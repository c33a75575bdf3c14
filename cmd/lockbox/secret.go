package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/template"
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
	var driver, templateDriver string
	cmd := &cobra.Command{
		Use:   "create [OPTIONS] NAME FILE|-",
		Short: "Create a secret from a file or from standard input (-)",
		Args: func(cmd *cobra.Command, args []string) error {
			// Before the argument count: docker's "create --driver D NAME"
			// has no FILE, and the driver is the thing to explain.
			if err := refuseSecretDrivers(driver, templateDriver); err != nil {
				return err
			}
			return cobra.ExactArgs(2)(cmd, args)
		},
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
	cmd.Flags().StringVarP(&driver, "driver", "d", "", "docker's secret driver: Lockbox has none (yet), so giving one is an error")
	cmd.Flags().StringVar(&templateDriver, "template-driver", "", "docker's template driver: Lockbox has none (yet), so giving one is an error")
	return cmd
}

// refuseSecretDrivers explains docker's --driver and --template-driver,
// which Lockbox accepts only to say it has no drivers.
func refuseSecretDrivers(driver, templateDriver string) error {
	switch {
	case driver != "":
		return fmt.Errorf("--driver %s: Lockbox has no secret drivers (yet): the managers keep every secret's data themselves, sealed; create the secret from a file or - without --driver", driver)
	case templateDriver != "":
		return fmt.Errorf("--template-driver %s: Lockbox has no template drivers (yet): a secret's data is mounted as given; create the secret without --template-driver", templateDriver)
	}
	return nil
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

// secretRow is a secret as ls shows it to templates and json, with
// docker's fields (docker/cli cli/command/secret/formatter.go
// secretContext): CreatedAt and UpdatedAt are the human "2 hours ago",
// Labels is "k=v,k2=v2" sorted, Driver is "" (Lockbox has no drivers),
// and {{.Label "k"}} is one label's value. Size and Digest are Lockbox's.
type secretRow struct {
	ID        string
	Name      string
	Driver    string
	CreatedAt string
	UpdatedAt string
	Labels    string
	Size      int64
	Digest    string
	labels    map[string]string
}

// secretHeaders are docker's column names of secretRow's fields.
var secretHeaders = map[string]string{"ID": "ID", "Name": "NAME", "Driver": "DRIVER", "CreatedAt": "CREATED", "UpdatedAt": "UPDATED", "Labels": "LABELS"}

func newSecretRow(s *types.Secret, now time.Time) secretRow {
	labels := s.GetSpec().GetLabels()
	kv := make([]string, 0, len(labels))
	for k, v := range labels {
		kv = append(kv, k+"="+v)
	}
	slices.Sort(kv)
	return secretRow{ID: s.Id, Name: s.GetSpec().GetName(), CreatedAt: ago(timeOf(s.GetMeta().GetCreatedAt()), now),
		UpdatedAt: ago(timeOf(s.GetMeta().GetUpdatedAt()), now), Labels: strings.Join(kv, ","), Size: s.Size, Digest: s.Digest, labels: labels}
}

// Label is {{.Label "k"}}: the value of label k, "" without it.
func (r secretRow) Label(name string) string { return r.labels[name] }

// MarshalJSON gives docker's "secret ls --format json" object exactly:
// its formatter's fields by name, in a map (so keys sort as docker's do),
// all strings. Size and Digest stay out so the line is docker's; templates
// ({{.Size}}) and inspect show them.
func (r secretRow) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"ID": r.ID, "Name": r.Name, "Driver": r.Driver, "CreatedAt": r.CreatedAt,
		"UpdatedAt": r.UpdatedAt, "Labels": r.Labels})
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
	filter := filterFlag{}
	cmd := &cobra.Command{
		Use:     "ls [OPTIONS]",
		Aliases: []string{"list"},
		Short:   "List secrets",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sf, err := parseSecretFilter(filter)
			if err != nil {
				return err
			}
			return c.run(cmd, func(ctx context.Context, cl adminapi.AdminClient) error {
				resp, err := cl.ListSecrets(ctx, &adminapi.ListSecretsRequest{})
				if err != nil {
					return err
				}
				sortByName(resp.Secrets, func(s *types.Secret) string { return s.GetSpec().GetName() })
				now := time.Now()
				// docker's default: "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.CreatedAt}}\t{{.UpdatedAt}}".
				t := &table{header: []string{"ID", "NAME", "DRIVER", "CREATED", "UPDATED"}, headers: secretHeaders}
				for _, s := range resp.Secrets {
					if !sf.match(s.Id, s.GetSpec().GetName(), s.GetSpec().GetLabels()) {
						continue
					}
					row := newSecretRow(s, now)
					t.add(s.Id, row, s.Id, row.Name, row.Driver, row.CreatedAt, row.UpdatedAt)
				}
				return t.print(cmd.OutOrStdout(), f)
			})
		},
	}
	f.add(cmd)
	cmd.Flags().VarP(filter, "filter", "f", "filter output as docker does: name=PREFIX, names=NAME, id=PREFIX, label=KEY or label=KEY=VALUE (repeatable)")
	return cmd
}

func newSecretInspectCommand(c *connFlags) *cobra.Command {
	cmd := newInspectCommand(c, "secret", "Show secrets in detail (never their data)", func(ctx context.Context, cl adminapi.AdminClient, a string) (any, error) {
		resp, err := cl.GetSecret(ctx, &adminapi.GetSecretRequest{NameOrId: a})
		if err != nil {
			return nil, err
		}
		return inspectSecret(resp.Secret), nil
	})
	var pretty bool
	cmd.Flags().BoolVar(&pretty, "pretty", false, "print the information in a human friendly format (docker's)")
	cmd.Flags().Lookup("format").Usage = "json, pretty, or a Go template applied to each secret"
	jsonOrTemplate := cmd.RunE
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		format, _ := cmd.Flags().GetString("format")
		if pretty {
			format = "pretty"
		}
		// docker/cli secret/inspect.go says the same.
		if strings.HasPrefix(format, "pretty") && format != "pretty" {
			return errors.New("cannot supply extra formatting options to the pretty template")
		}
		if format != "pretty" {
			return jsonOrTemplate(cmd, args)
		}
		return c.run(cmd, func(ctx context.Context, cl adminapi.AdminClient) error {
			return c.eachArg(ctx, args, func(a string) error {
				resp, err := cl.GetSecret(ctx, &adminapi.GetSecretRequest{NameOrId: a})
				if err != nil {
					return err
				}
				return secretPretty.Execute(cmd.OutOrStdout(), prettySecret(resp.Secret))
			})
		})
	}
	return cmd
}

// secretPretty is docker's "secret inspect --pretty" template, as written
// in docker/cli cli/command/secret/formatter.go
// (secretInspectPrettyTemplate), followed by a newline per secret.
var secretPretty = template.Must(template.New("pretty").Parse(`ID:              {{.ID}}
Name:              {{.Name}}
{{- if .Labels }}
Labels:
{{- range $k, $v := .Labels }}
 - {{ $k }}{{if $v }}={{ $v }}{{ end }}
{{- end }}{{ end }}
Driver:            {{.Driver}}
Created at:        {{.CreatedAt}}
Updated at:        {{.UpdatedAt}}
`))

// prettySecret is what the pretty template reads: times as docker's
// formatter.PrettyPrint prints a time.Time (its String form, in UTC as the
// API gives it).
func prettySecret(s *types.Secret) map[string]any {
	return map[string]any{
		"ID": s.Id, "Name": s.GetSpec().GetName(), "Labels": s.GetSpec().GetLabels(), "Driver": "",
		"CreatedAt": timeOf(s.GetMeta().GetCreatedAt()).UTC().String(),
		"UpdatedAt": timeOf(s.GetMeta().GetUpdatedAt()).UTC().String(),
	}
}

func newSecretRmCommand(c *connFlags) *cobra.Command {
	return newRmCommand(c, "secret", "Remove secrets no service references", func(ctx context.Context, cl adminapi.AdminClient, a string) error {
		_, err := cl.RemoveSecret(ctx, &adminapi.RemoveSecretRequest{NameOrId: a})
		return err
	})
}
