package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/constraint"
)

func newServiceCommand(c *connFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "service", Short: "Manage services: the secret references and placement containers claim"}
	cmd.AddCommand(newServiceCreateCommand(c), newServiceUpdateCommand(c), newServiceLsCommand(c),
		newServiceInspectCommand(c), newServiceRmCommand(c))
	return cmd
}

// parseSecretRef parses --secret: "NAME" or
// "source=NAME[,target=T][,uid=U][,gid=G][,mode=0400]", as docker does.
// Ranges are checked by the manager; this only reads the syntax.
func parseSecretRef(s string) (*types.SecretReference, error) {
	ref := &types.SecretReference{Target: &types.FileTarget{}}
	if !strings.Contains(s, "=") {
		if s == "" {
			return nil, fmt.Errorf("--secret: empty")
		}
		ref.SecretName = s
		return ref, nil
	}
	fields, err := csv.NewReader(strings.NewReader(s)).Read()
	if err != nil {
		return nil, fmt.Errorf("--secret %q: %w", s, err)
	}
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return nil, fmt.Errorf("--secret %q: field %q is not KEY=VALUE", s, f)
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "source", "src":
			ref.SecretName = v
		case "target":
			ref.Target.Name = v
		case "uid":
			ref.Target.Uid = v
		case "gid":
			ref.Target.Gid = v
		case "mode":
			m, err := strconv.ParseUint(strings.TrimPrefix(v, "0o"), 8, 32)
			if err != nil {
				return nil, fmt.Errorf("--secret %q: mode %q is not an octal number such as 0400", s, v)
			}
			ref.Target.Mode = uint32(m)
		default:
			return nil, fmt.Errorf("--secret %q: unknown field %q (want source, target, uid, gid, mode)", s, k)
		}
	}
	if ref.SecretName == "" {
		return nil, fmt.Errorf("--secret %q: source is required", s)
	}
	return ref, nil
}

func parseSecretRefs(specs []string) ([]*types.SecretReference, error) {
	out := make([]*types.SecretReference, 0, len(specs))
	for _, s := range specs {
		r, err := parseSecretRef(s)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func newServiceCreateCommand(c *connFlags) *cobra.Command {
	var secrets, constraints, labels []string
	cmd := &cobra.Command{
		Use:   "create [OPTIONS] NAME",
		Short: "Create a service",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			refs, err := parseSecretRefs(secrets)
			if err != nil {
				return err
			}
			lbl, err := parseKeyValues("label", labels)
			if err != nil {
				return err
			}
			spec := &types.ServiceSpec{Name: args[0], Labels: lbl, Secrets: refs}
			if len(constraints) > 0 {
				spec.Placement = &types.Placement{Constraints: constraints}
			}
			return c.run(cmd, func(ctx context.Context, cl adminapi.AdminClient) error {
				resp, err := cl.CreateService(ctx, &adminapi.CreateServiceRequest{Spec: spec})
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), resp.Service.Id)
				return nil
			})
		},
	}
	cmd.Flags().StringArrayVar(&secrets, "secret", nil, "secret reference: NAME or source=NAME[,target=T][,uid=U][,gid=G][,mode=0400] (repeatable)")
	cmd.Flags().StringArrayVar(&constraints, "constraint", nil, "placement constraint such as node.labels.zone==east (repeatable)")
	cmd.Flags().StringArrayVarP(&labels, "label", "l", nil, "service label KEY=VALUE (repeatable)")
	return cmd
}

// maxUpdateAttempts bounds the read-modify-write retries of update verbs
// when another writer keeps winning.
const maxUpdateAttempts = 10

func newServiceUpdateCommand(c *connFlags) *cobra.Command {
	var secretAdd, secretRm, consAdd, consRm, labelAdd, labelRm []string
	cmd := &cobra.Command{
		Use:   "update [OPTIONS] SERVICE",
		Short: "Add or remove a service's secret references, constraints and labels",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			adds, err := parseSecretRefs(secretAdd)
			if err != nil {
				return err
			}
			lblAdd, err := parseKeyValues("label-add", labelAdd)
			if err != nil {
				return err
			}
			return c.run(cmd, func(ctx context.Context, cl adminapi.AdminClient) error {
				for attempt := 1; ; attempt++ {
					cur, err := cl.GetService(ctx, &adminapi.GetServiceRequest{NameOrId: args[0]})
					if err != nil {
						return err
					}
					spec := cur.Service.Spec
					if err := applyServiceUpdate(spec, adds, secretRm, consAdd, consRm, lblAdd, labelRm); err != nil {
						return err
					}
					resp, err := cl.UpdateService(ctx, &adminapi.UpdateServiceRequest{
						NameOrId: cur.Service.Id, Version: cur.Service.GetMeta().GetVersion(), Spec: spec,
					})
					if codeOf(err) == codes.Aborted && attempt < maxUpdateAttempts {
						continue // someone else updated it first: read again
					}
					if err != nil {
						return err
					}
					fmt.Fprintln(cmd.OutOrStdout(), resp.Service.Id)
					return nil
				}
			})
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&secretAdd, "secret-add", nil, "add a secret reference (same syntax as --secret)")
	fl.StringArrayVar(&secretRm, "secret-rm", nil, "remove every reference to this secret (name or ID)")
	fl.StringArrayVar(&consAdd, "constraint-add", nil, "add a placement constraint")
	fl.StringArrayVar(&consRm, "constraint-rm", nil, "remove a placement constraint")
	fl.StringArrayVar(&labelAdd, "label-add", nil, "add or change a label KEY=VALUE")
	fl.StringArrayVar(&labelRm, "label-rm", nil, "remove a label")
	return cmd
}

// applyServiceUpdate edits spec in place. Removals come before additions,
// so "--secret-rm a --secret-add source=a,target=b" retargets a.
func applyServiceUpdate(spec *types.ServiceSpec, adds []*types.SecretReference, secretRm, consAdd, consRm []string, lblAdd map[string]string, lblRm []string) error {
	for _, rm := range secretRm {
		before := len(spec.Secrets)
		spec.Secrets = slices.DeleteFunc(spec.Secrets, func(r *types.SecretReference) bool {
			return r.SecretName == rm || r.SecretId == rm
		})
		if len(spec.Secrets) == before {
			return fmt.Errorf("--secret-rm %s: service '%s' has no reference to that secret", rm, spec.Name)
		}
	}
	spec.Secrets = append(spec.Secrets, adds...)

	if spec.Placement == nil {
		spec.Placement = &types.Placement{}
	}
	canon := func(s string) string {
		if c, err := constraint.Parse(s); err == nil {
			return c.String()
		}
		return s
	}
	for _, rm := range consRm {
		want := canon(rm)
		before := len(spec.Placement.Constraints)
		spec.Placement.Constraints = slices.DeleteFunc(spec.Placement.Constraints, func(c string) bool { return canon(c) == want })
		if len(spec.Placement.Constraints) == before {
			return fmt.Errorf("--constraint-rm %s: service '%s' has no such constraint", rm, spec.Name)
		}
	}
	for _, add := range consAdd {
		if !slices.ContainsFunc(spec.Placement.Constraints, func(c string) bool { return canon(c) == canon(add) }) {
			spec.Placement.Constraints = append(spec.Placement.Constraints, add)
		}
	}
	for _, k := range lblRm {
		delete(spec.Labels, k)
	}
	if len(lblAdd) > 0 && spec.Labels == nil {
		spec.Labels = map[string]string{}
	}
	for k, v := range lblAdd {
		spec.Labels[k] = v
	}
	return nil
}

// serviceRow is a service as ls shows it.
type serviceRow struct {
	ID          string
	Name        string
	Secrets     []string
	Constraints []string
	CreatedAt   time.Time
	UpdatedAt   time.Time
	Labels      map[string]string
}

func newServiceLsCommand(c *connFlags) *cobra.Command {
	var f listFlags
	cmd := &cobra.Command{
		Use:     "ls [OPTIONS]",
		Aliases: []string{"list"},
		Short:   "List services",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.run(cmd, func(ctx context.Context, cl adminapi.AdminClient) error {
				resp, err := cl.ListServices(ctx, &adminapi.ListServicesRequest{})
				if err != nil {
					return err
				}
				sortByName(resp.Services, func(s *types.Service) string { return s.GetSpec().GetName() })
				now := time.Now()
				t := &table{header: []string{"ID", "NAME", "SECRETS", "PLACEMENT", "UPDATED"}}
				for _, s := range resp.Services {
					row := serviceRow{ID: s.Id, Name: s.GetSpec().GetName(), Constraints: s.GetSpec().GetPlacement().GetConstraints(),
						CreatedAt: timeOf(s.GetMeta().GetCreatedAt()), UpdatedAt: timeOf(s.GetMeta().GetUpdatedAt()), Labels: s.GetSpec().GetLabels()}
					for _, r := range s.GetSpec().GetSecrets() {
						row.Secrets = append(row.Secrets, r.SecretName)
					}
					placement := strings.Join(row.Constraints, ",")
					if placement == "" {
						placement = "every node"
					}
					t.add(s.Id, row, s.Id, row.Name, strings.Join(row.Secrets, ","), placement, ago(row.UpdatedAt, now))
				}
				return t.print(cmd.OutOrStdout(), f)
			})
		},
	}
	f.add(cmd)
	return cmd
}

// serviceInspect is a service as inspect shows it.
type serviceInspect struct {
	ID      string
	Version struct{ Index uint64 }
	CreatedAt,
	UpdatedAt time.Time
	Spec struct {
		Name      string
		Labels    map[string]string `json:",omitempty"`
		Secrets   []refInspect
		Placement struct {
			Constraints []string `json:",omitempty"`
		}
	}
}

type refInspect struct {
	SecretID   string
	SecretName string
	File       struct {
		Name string
		UID  string
		GID  string
		Mode string
	}
}

func inspectService(s *types.Service) serviceInspect {
	v := serviceInspect{ID: s.Id, CreatedAt: timeOf(s.GetMeta().GetCreatedAt()), UpdatedAt: timeOf(s.GetMeta().GetUpdatedAt())}
	v.Version.Index = s.GetMeta().GetVersion()
	v.Spec.Name = s.GetSpec().GetName()
	v.Spec.Labels = s.GetSpec().GetLabels()
	v.Spec.Placement.Constraints = s.GetSpec().GetPlacement().GetConstraints()
	v.Spec.Secrets = []refInspect{}
	for _, r := range s.GetSpec().GetSecrets() {
		ri := refInspect{SecretID: r.SecretId, SecretName: r.SecretName}
		// Show the defaults the nodes will apply, as docker does.
		ri.File.Name, ri.File.UID, ri.File.GID = r.GetTarget().GetName(), r.GetTarget().GetUid(), r.GetTarget().GetGid()
		if ri.File.Name == "" {
			ri.File.Name = r.SecretName
		}
		if ri.File.UID == "" {
			ri.File.UID = "0"
		}
		if ri.File.GID == "" {
			ri.File.GID = "0"
		}
		mode := r.GetTarget().GetMode()
		if mode == 0 {
			mode = 0o444
		}
		ri.File.Mode = fmt.Sprintf("%04o", mode)
		v.Spec.Secrets = append(v.Spec.Secrets, ri)
	}
	return v
}

func newServiceInspectCommand(c *connFlags) *cobra.Command {
	return newInspectCommand(c, "service", "Show services in detail", func(ctx context.Context, cl adminapi.AdminClient, a string) (any, error) {
		resp, err := cl.GetService(ctx, &adminapi.GetServiceRequest{NameOrId: a})
		if err != nil {
			return nil, err
		}
		return inspectService(resp.Service), nil
	})
}

func newServiceRmCommand(c *connFlags) *cobra.Command {
	return newRmCommand(c, "service", "Remove services (their grants leave every node)", func(ctx context.Context, cl adminapi.AdminClient, a string) error {
		_, err := cl.RemoveService(ctx, &adminapi.RemoveServiceRequest{NameOrId: a})
		return err
	})
}
