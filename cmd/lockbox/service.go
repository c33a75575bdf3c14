package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/claimrule"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/api/validation"
	"github.com/lockbox-project/lockbox/manager/admin"
	"github.com/lockbox-project/lockbox/manager/constraint"
)

func newServiceCommand(c *connFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "service", Short: "Manage services: the secret references and placement containers claim"}
	cmd.AddCommand(newServiceCreateCommand(c), newServiceUpdateCommand(c), newServiceLsCommand(c),
		newServiceInspectCommand(c), newServicePsCommand(c), newServiceRmCommand(c))
	return cmd
}

// parseSecretRef parses --secret: "NAME" or
// "source=NAME[,target=T][,uid=U][,gid=G][,mode=0400][,signal=SIG]", as
// docker does, plus Lockbox's signal (sent after a live update; read by
// api/validation.ParseSignal and kept as written, as docker keeps
// --stop-signal). Ranges are checked by the manager; this only reads the
// syntax.
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
			m, err := parseFileMode(v)
			if err != nil {
				return nil, fmt.Errorf("--secret %q: %w", s, err)
			}
			ref.Target.Mode = m
		case "signal":
			if _, err := validation.ParseSignal(v); err != nil {
				return nil, fmt.Errorf("--secret %q: %w", s, err)
			}
			ref.Signal = v
		default:
			return nil, fmt.Errorf("--secret %q: unknown field %q (want source, target, uid, gid, mode, signal)", s, k)
		}
	}
	if ref.SecretName == "" {
		return nil, fmt.Errorf("--secret %q: source is required", s)
	}
	return ref, nil
}

// parseFileMode reads mode= as docker does: a Go integer literal
// (docker/cli opts/swarmopts/secret.go: strconv.ParseUint(val, 0, 32)),
// so 0440 and 0o440 are octal, 0x120 hex and 292 decimal. Lockbox used to
// read every mode as octal: a plain number that both readings accept and
// that they read differently (440: docker 440 = 0670, Lockbox 0440) is
// refused with both readings rather than silently meaning either.
func parseFileMode(v string) (uint32, error) {
	m, err := strconv.ParseUint(v, 0, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid mode %q: write it as Go and docker read it: octal with a leading 0 or 0o (0440, 0o440) or decimal (288)", v)
	}
	if oct, err := strconv.ParseUint(v, 8, 32); err == nil && oct != m && !strings.HasPrefix(v, "0") {
		return 0, fmt.Errorf("mode=%s is ambiguous: docker reads it as decimal %d (%#o), earlier Lockbox read it as octal %#o (%d); "+
			"write %#o or 0o%o (or decimal %d) for octal %o, or %#o for docker's reading", v, m, m, oct, oct, oct, oct, oct, oct, m)
	}
	if m == 0 {
		// Lockbox stores 0 as "the default" (0444); docker would make a
		// file no one but root can read. Neither is worth guessing.
		return 0, fmt.Errorf("mode=%s: a secret file with mode 0 is readable only by root; Lockbox keeps 0 for the default (0444): give the mode you mean, such as 0400", v)
	}
	return uint32(m), nil
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
	var secrets, constraints, labels, claims []string
	var liveUpdate bool
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
			rules, err := parseClaimRules("--claim", claims)
			if err != nil {
				return err
			}
			spec := &types.ServiceSpec{Name: args[0], Labels: lbl, Secrets: refs, ClaimRules: rules, LiveUpdate: liveUpdate}
			if len(constraints) > 0 {
				spec.Placement = &types.Placement{Constraints: constraints}
			}
			// The managers' rule, checked before anything is sent.
			if err := admin.CheckSignals(spec); err != nil {
				return err
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
	cmd.Flags().StringArrayVar(&secrets, "secret", nil, "secret reference: NAME or source=NAME[,target=T][,uid=U][,gid=G][,mode=0400][,signal=SIGHUP] (repeatable; mode as docker reads it: 0400, 0o400 or decimal 256; signal: sent to the container's init after a live update, needs --live-update)")
	cmd.Flags().StringArrayVar(&constraints, "constraint", nil, "placement constraint such as node.labels.zone==east (repeatable)")
	cmd.Flags().StringArrayVarP(&labels, "label", "l", nil, "service label KEY=VALUE (repeatable)")
	cmd.Flags().StringArrayVar(&claims, "claim", nil, claimFlagHelp)
	cmd.Flags().BoolVar(&liveUpdate, "live-update", false, liveUpdateHelp)
	return cmd
}

// liveUpdateHelp is --live-update's help on create and update.
const liveUpdateHelp = "change the files of running containers when the service's secret references change (atomically per file); " +
	"without it, as in swarm, running containers keep what they started with"

// claimFlagHelp is --claim's help: the keys, and the default that holds
// without a rule.
const claimFlagHelp = "claim rule such as k8s.namespace==payments: who may claim the service (repeatable, all must hold; keys " +
	claimrule.KeysHelp + "); a Kubernetes pod needs a k8s.namespace== rule naming its namespace"

// parseClaimRules checks rules as the managers will, so that bad input is
// refused before anything is sent, and returns them in canonical form.
func parseClaimRules(flag string, rules []string) ([]string, error) {
	set, err := claimrule.ParseSet(rules)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	if set.Len() == 0 {
		return nil, nil
	}
	return set.Strings(), nil
}

// maxUpdateAttempts bounds the read-modify-write retries of update verbs
// when another writer keeps winning.
const maxUpdateAttempts = 10

func newServiceUpdateCommand(c *connFlags) *cobra.Command {
	var secretAdd, secretRm, consAdd, consRm, labelAdd, labelRm, claimAdd, claimRm []string
	var liveUpdate bool
	cmd := &cobra.Command{
		Use:   "update [OPTIONS] SERVICE",
		Short: "Add or remove a service's secret references, constraints, claim rules and labels; turn live update on or off",
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
			edits := serviceEdits{secretAdd: adds, secretRm: secretRm, consAdd: consAdd, consRm: consRm,
				labelAdd: lblAdd, labelRm: labelRm, claimAdd: claimAdd, claimRm: claimRm}
			if cmd.Flags().Changed("live-update") {
				edits.liveUpdate = &liveUpdate
			}
			if err := edits.check(); err != nil {
				return err
			}
			return c.run(cmd, func(ctx context.Context, cl adminapi.AdminClient) error {
				for attempt := 1; ; attempt++ {
					cur, err := cl.GetService(ctx, &adminapi.GetServiceRequest{NameOrId: args[0]})
					if err != nil {
						return err
					}
					spec := cur.Service.Spec
					if err := applyServiceUpdate(spec, edits); err != nil {
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
	fl.StringArrayVar(&secretRm, "secret-rm", nil, "remove every reference to this secret (name or ID); one the service lacks is skipped, as docker does")
	fl.StringArrayVar(&consAdd, "constraint-add", nil, "add a placement constraint")
	fl.StringArrayVar(&consRm, "constraint-rm", nil, "remove a placement constraint")
	fl.StringArrayVar(&labelAdd, "label-add", nil, "add or change a label KEY=VALUE")
	fl.StringArrayVar(&labelRm, "label-rm", nil, "remove a label")
	fl.StringArrayVar(&claimAdd, "claim-add", nil, "add a claim rule (same syntax as --claim)")
	fl.StringArrayVar(&claimRm, "claim-rm", nil, "remove a claim rule (one the service lacks is skipped, as docker's --constraint-rm does)")
	fl.BoolVar(&liveUpdate, "live-update", false, liveUpdateHelp+" (changed only when given: --live-update=false turns it off)")
	return cmd
}

// serviceEdits is what "service update" changes.
type serviceEdits struct {
	secretAdd                 []*types.SecretReference
	secretRm, consAdd, consRm []string
	labelAdd                  map[string]string
	labelRm                   []string
	claimAdd, claimRm         []string
	liveUpdate                *bool // nil: unchanged
}

// check refuses malformed claim rules before anything is read or sent.
// Whether the rules the service ends with can hold together is checked
// by applyServiceUpdate, once it knows them.
func (ed serviceEdits) check() error {
	for _, r := range ed.claimAdd {
		if _, err := claimrule.Parse(r); err != nil {
			return fmt.Errorf("--claim-add: %w", err)
		}
	}
	for _, r := range ed.claimRm {
		if _, err := claimrule.Parse(r); err != nil {
			return fmt.Errorf("--claim-rm: %w", err)
		}
	}
	return nil
}

// applyServiceUpdate edits spec in place. Removals come before additions,
// so "--secret-rm a --secret-add source=a,target=b" retargets a.
func applyServiceUpdate(spec *types.ServiceSpec, ed serviceEdits) error {
	adds, secretRm, consAdd, consRm, lblAdd, lblRm := ed.secretAdd, ed.secretRm, ed.consAdd, ed.consRm, ed.labelAdd, ed.labelRm
	// A reference the service lacks is skipped, as docker does
	// (docker/cli service/update.go getUpdatedSecrets keeps every
	// reference not in the --secret-rm set and checks nothing more), so a
	// rotation script can be run again.
	for _, rm := range secretRm {
		spec.Secrets = slices.DeleteFunc(spec.Secrets, func(r *types.SecretReference) bool {
			return r.SecretName == rm || r.SecretId == rm
		})
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
	if err := applyClaimEdits(spec, ed.claimAdd, ed.claimRm); err != nil {
		return err
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
	if ed.liveUpdate != nil {
		spec.LiveUpdate = *ed.liveUpdate
	}
	// What the service would end with is checked before it is sent: a
	// signal needs live update, whichever of the two this update changes.
	if err := admin.CheckSignals(spec); err != nil {
		return fmt.Errorf("service '%s': %w", spec.Name, err)
	}
	return nil
}

// applyClaimEdits removes, then adds, claim rules, compared in canonical
// form ("k8s.namespace == a" is "k8s.namespace==a"). Removing a rule the
// service lacks is no error, as with docker's --constraint-rm: the rules
// the service keeps are at least as strict. The rules the service ends
// with are checked together before anything is sent.
func applyClaimEdits(spec *types.ServiceSpec, add, rm []string) error {
	if len(add) == 0 && len(rm) == 0 {
		return nil
	}
	canon := func(s string) string {
		if r, err := claimrule.Parse(s); err == nil {
			return r.String()
		}
		return s
	}
	for _, r := range rm {
		want := canon(r)
		spec.ClaimRules = slices.DeleteFunc(spec.ClaimRules, func(have string) bool { return canon(have) == want })
	}
	for _, r := range add {
		if !slices.ContainsFunc(spec.ClaimRules, func(have string) bool { return canon(have) == canon(r) }) {
			spec.ClaimRules = append(spec.ClaimRules, canon(r))
		}
	}
	if _, err := claimrule.ParseSet(spec.ClaimRules); err != nil {
		return fmt.Errorf("service '%s' would have the claim rules %s: %w", spec.Name, strings.Join(spec.ClaimRules, ", "), err)
	}
	return nil
}

// serviceRow is a service as ls shows it.
type serviceRow struct {
	ID          string
	Name        string
	Secrets     []string
	Constraints []string
	ClaimRules  []string
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
				t := &table{header: []string{"ID", "NAME", "SECRETS", "PLACEMENT", "CLAIMS", "UPDATED"}}
				for _, s := range resp.Services {
					row := serviceRow{ID: s.Id, Name: s.GetSpec().GetName(), Constraints: s.GetSpec().GetPlacement().GetConstraints(), ClaimRules: s.GetSpec().GetClaimRules(),
						CreatedAt: timeOf(s.GetMeta().GetCreatedAt()), UpdatedAt: timeOf(s.GetMeta().GetUpdatedAt()), Labels: s.GetSpec().GetLabels()}
					for _, r := range s.GetSpec().GetSecrets() {
						row.Secrets = append(row.Secrets, r.SecretName)
					}
					placement := strings.Join(row.Constraints, ",")
					if placement == "" {
						placement = "every node"
					}
					t.add(s.Id, row, s.Id, row.Name, strings.Join(row.Secrets, ","), placement, claimsCell(row.ClaimRules), ago(row.UpdatedAt, now))
				}
				return t.print(cmd.OutOrStdout(), f)
			})
		},
	}
	f.add(cmd)
	return cmd
}

// claimsCell is the CLAIMS column: the rules, or who the default admits.
func claimsCell(rules []string) string {
	if len(rules) == 0 {
		return "non-Kubernetes"
	}
	return strings.Join(rules, ",")
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
		// ClaimRules are named after the proto field and the flag's
		// purpose: "Claims" would read as the containers that claimed the
		// service, which "service ps" shows.
		ClaimRules []string
		// LiveUpdate is always present: false is swarm's behaviour, a
		// decision rather than a missing field.
		LiveUpdate bool
	}
}

// refInspect is a secret reference in docker's API shape
// (moby api/types/swarm SecretReference): File.Mode is an os.FileMode, a
// number in JSON (0444 is 292).
type refInspect struct {
	SecretID   string
	SecretName string
	File       struct {
		Name string
		UID  string
		GID  string
		Mode os.FileMode
	}
	// Signal is Lockbox's (docker has no live update): left out when the
	// reference has none, so docker's shape is unchanged.
	Signal string `json:",omitempty"`
}

func inspectService(s *types.Service) serviceInspect {
	v := serviceInspect{ID: s.Id, CreatedAt: timeOf(s.GetMeta().GetCreatedAt()), UpdatedAt: timeOf(s.GetMeta().GetUpdatedAt())}
	v.Version.Index = s.GetMeta().GetVersion()
	v.Spec.Name = s.GetSpec().GetName()
	v.Spec.Labels = s.GetSpec().GetLabels()
	v.Spec.Placement.Constraints = s.GetSpec().GetPlacement().GetConstraints()
	// Always present, [] when empty: no rules is a decision (the default),
	// not a missing field.
	v.Spec.ClaimRules = append([]string{}, s.GetSpec().GetClaimRules()...)
	v.Spec.LiveUpdate = s.GetSpec().GetLiveUpdate()
	v.Spec.Secrets = []refInspect{}
	for _, r := range s.GetSpec().GetSecrets() {
		ri := refInspect{SecretID: r.SecretId, SecretName: r.SecretName, Signal: r.Signal}
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
		ri.File.Mode = os.FileMode(mode)
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
