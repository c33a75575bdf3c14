package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
)

// `lockbox service ps`: the containers that hold a service's secrets, as
// their nodes' agents last reported them. It keeps the shape of `docker
// service ps` (ID NAME IMAGE NODE DESIRED STATE CURRENT STATE ERROR PORTS)
// where Lockbox has the concept: a Lockbox service runs nothing, so there
// are no tasks, images, desired states or ports; the rows are containers
// (started by any containerd client) that claimed the service.

// psRow is one container as ps shows it and templates see it.
type psRow struct {
	ID           string   // the container ID
	Name         string   // the service's name (docker: the task's name)
	Node         string   // the node's hostname, or its ID and "(removed)"
	NodeID       string   `json:"-"`
	Secrets      []string // name@version: the secrets the container holds
	CurrentState string   // "Updated 2 seconds ago"
	State        string   `json:"-"` // mounted, updated or update-failed
	Error        string   // quoted, and cut unless --no-trunc, as docker's

	MountedAt time.Time `json:"-"`
	UpdatedAt time.Time `json:"-"`
	full      string    // the container ID, never truncated (filters)
	host      string    // the node's hostname (filters)
}

// psStates names each row state as docker names a task's ("Running").
var psStates = map[string]string{"mounted": "Mounted", "updated": "Updated", "update-failed": "Update failed"}

// psErrorMax is docker's maxErrLength for the ERROR column of service ps.
const psErrorMax = 30

// psFilterKeys are the --filter keys service ps takes.
var psFilterKeys = []string{"id", "node", "state"}

func newServicePsCommand(c *connFlags) *cobra.Command {
	var f listFlags
	var noTrunc, noResolve bool
	filters := filterFlag{}
	cmd := &cobra.Command{
		Use:   "ps [OPTIONS] SERVICE [SERVICE...]",
		Short: "List the containers that hold services' secrets, by node, with the versions they hold",
		Long: "List the containers that hold services' secrets, as their nodes' agents last reported them: " +
			"the node, the secrets (name@version) each container holds, and when they were mounted or last changed by a live update.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for k := range filters {
				if !slices.Contains(psFilterKeys, k) {
					return fmt.Errorf("invalid filter '%s': service ps filters on %s", k, strings.Join(psFilterKeys, ", "))
				}
			}
			return c.run(cmd, func(ctx context.Context, cl adminapi.AdminClient) error {
				now := time.Now()
				t := &table{header: []string{"ID", "NAME", "NODE", "SECRETS", "CURRENT STATE", "ERROR"}, headers: map[string]string{"CurrentState": "CURRENT STATE"}}
				for _, a := range args {
					rows, err := listServiceContainers(ctx, cl, a)
					if err != nil {
						return err
					}
					for _, r := range rows {
						row := psRowOf(r.svc, r.c, now, noTrunc)
						if noResolve {
							row.Name, row.Node = r.svcID, r.c.NodeId
						}
						if !psMatch(filters, row) {
							continue
						}
						t.add(row.ID, row, row.ID, row.Name, row.Node, strings.Join(row.Secrets, ","), row.CurrentState, row.Error)
					}
				}
				return t.print(cmd.OutOrStdout(), f)
			})
		},
	}
	f.add(cmd)
	cmd.Flags().Lookup("quiet").Usage = "only display container IDs"
	cmd.Flags().BoolVar(&noTrunc, "no-trunc", false, "do not truncate output (container and secret IDs, errors)")
	cmd.Flags().BoolVar(&noResolve, "no-resolve", false, "do not map IDs to names: the service and node IDs in NAME and NODE")
	cmd.Flags().VarP(filters, "filter", "f", "filter output: node=ID|HOSTNAME, id=CONTAINER-ID-PREFIX, state=mounted|updated|update-failed (repeatable)")
	return cmd
}

type serviceContainer struct {
	svc, svcID string
	c          *adminapi.ServiceContainer
}

// listServiceContainers reads every page of a service's containers, ordered
// by node hostname then container ID.
func listServiceContainers(ctx context.Context, cl adminapi.AdminClient, nameOrID string) ([]serviceContainer, error) {
	var out []serviceContainer
	after := ""
	for {
		resp, err := cl.ListServiceContainers(ctx, &adminapi.ListServiceContainersRequest{NameOrId: nameOrID, After: after})
		if err != nil {
			return nil, err
		}
		for _, c := range resp.Containers {
			out = append(out, serviceContainer{svc: resp.GetService().GetSpec().GetName(), svcID: resp.GetService().GetId(), c: c})
		}
		if resp.NextPage == "" || resp.NextPage == after {
			break
		}
		after = resp.NextPage
	}
	slices.SortStableFunc(out, func(a, b serviceContainer) int {
		if n := strings.Compare(psNode(a.c), psNode(b.c)); n != 0 {
			return n
		}
		return strings.Compare(a.c.ContainerId, b.c.ContainerId)
	})
	return out, nil
}

// psNode is the NODE cell: the hostname, or the ID of a node without one
// (or removed since it reported).
func psNode(c *adminapi.ServiceContainer) string {
	switch {
	case c.NodeRemoved:
		return c.NodeId + " (removed)"
	case c.NodeHostname == "":
		return c.NodeId
	}
	return c.NodeHostname
}

// psID shortens an ID as docker's ps does (12 characters) unless
// --no-trunc.
func psID(id string, noTrunc bool) string {
	if !noTrunc && len(id) > 12 {
		return id[:12]
	}
	return id
}

func psRowOf(svc string, c *adminapi.ServiceContainer, now time.Time, noTrunc bool) psRow {
	r := psRow{ID: psID(c.ContainerId, noTrunc), Name: svc, Node: psNode(c), NodeID: c.NodeId, State: c.State, Error: psError(c.Error, noTrunc),
		MountedAt: timeOf(c.MountedAt), UpdatedAt: timeOf(c.UpdatedAt), full: c.ContainerId, Secrets: []string{}, host: c.NodeHostname}
	for _, s := range c.Secrets {
		if s.SecretId == "" {
			r.Secrets = append(r.Secrets, s.SecretName)
			continue
		}
		r.Secrets = append(r.Secrets, s.SecretName+"@"+psID(s.SecretId, noTrunc))
	}
	state := psStates[c.State]
	if state == "" {
		state = c.State
	}
	// docker: "Running 2 hours ago", the duration in lower case.
	r.CurrentState = state + " " + strings.ToLower(ago(r.UpdatedAt, now))
	return r
}

// psError is docker's ERROR cell (cli/command/task formatter): cut to
// psErrorMax characters with an ellipsis unless --no-trunc, then quoted.
func psError(e string, noTrunc bool) string {
	if e == "" {
		return ""
	}
	if r := []rune(e); !noTrunc && len(r) > psErrorMax {
		e = string(r[:psErrorMax-1]) + "…"
	}
	return `"` + e + `"`
}

// psMatch applies the filters: each key given must match one of its values.
func psMatch(f filterFlag, r psRow) bool {
	if vs := f["node"]; len(vs) > 0 && !slices.ContainsFunc(vs, func(v string) bool {
		return v == r.NodeID || r.host != "" && strings.EqualFold(v, r.host)
	}) {
		return false
	}
	if vs := f["id"]; len(vs) > 0 && !slices.ContainsFunc(vs, func(v string) bool { return strings.HasPrefix(r.full, v) }) {
		return false
	}
	if vs := f["state"]; len(vs) > 0 && !slices.ContainsFunc(vs, func(v string) bool { return strings.EqualFold(v, r.State) }) {
		return false
	}
	return true
}
