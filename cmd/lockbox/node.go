package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
)

func newNodeCommand(c *connFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "Manage nodes"}
	cmd.AddCommand(newNodeLsCommand(c), newNodeInspectCommand(c), newNodeUpdateCommand(c), newNodeRmCommand(c))
	return cmd
}

func roleName(r types.NodeRole) string {
	if r == types.NodeRole_NODE_ROLE_MANAGER {
		return "manager"
	}
	return "worker"
}

func stateName(s types.NodeState) string {
	switch s {
	case types.NodeState_NODE_STATE_READY:
		return "Ready"
	case types.NodeState_NODE_STATE_DOWN:
		return "Down"
	}
	return "Unknown"
}

// nodeRow is a node as ls shows it (and --format sees it).
type nodeRow struct {
	ID       string
	Hostname string
	Status   string
	// ManagerStatus is docker's column: empty for a worker; for a
	// manager, Reachable while its registration is live, else
	// Unreachable.
	ManagerStatus string
	AgentVersion  string
	// Grants is the number of grants the answering manager last sent the
	// node, "-" when it does not serve the node (another manager does, or
	// none since it started).
	Grants   string
	Role     string
	OS       string
	Arch     string
	LastSeen time.Time
	// LastHeartbeat is the last heartbeat the answering manager had from
	// the node; zero when it does not serve it.
	LastHeartbeat time.Time
	Labels        map[string]string
}

// nodeLsHeader is docker's node ls shape (ID HOSTNAME STATUS AVAILABILITY
// MANAGER STATUS ENGINE VERSION) without AVAILABILITY (Lockbox has no
// drain), with the agent's version for the engine's and the grants held
// added. Role, platform and the times are template fields, and in inspect.
var nodeLsHeader = []string{"ID", "HOSTNAME", "STATUS", "MANAGER STATUS", "AGENT VERSION", "GRANTS"}

func managerStatus(n *types.Node, live *types.NodeLiveStatus) string {
	switch {
	case n.Role != types.NodeRole_NODE_ROLE_MANAGER:
		return ""
	case live.GetManagerRunning():
		return "Reachable"
	}
	return "Unreachable"
}

func grantsHeld(live *types.NodeLiveStatus) string {
	if !live.GetGrantsKnown() {
		return "-"
	}
	return strconv.FormatUint(uint64(live.GetGrantsHeld()), 10)
}

func nodeRowOf(n *types.Node, live *types.NodeLiveStatus) nodeRow {
	p := n.GetDescription().GetPlatform()
	return nodeRow{ID: printable(n.Id), Hostname: printable(n.GetDescription().GetHostname()), Status: stateName(n.State),
		ManagerStatus: managerStatus(n, live), AgentVersion: printable(n.GetDescription().GetAgentVersion()), Grants: grantsHeld(live),
		Role: roleName(n.Role), OS: printable(p.GetOs()), Arch: printable(p.GetArchitecture()), LastSeen: timeOf(n.LastSeen),
		LastHeartbeat: timeOf(live.GetLastHeartbeat()), Labels: printableMap(n.GetSpec().GetLabels())}
}

func newNodeLsCommand(c *connFlags) *cobra.Command {
	var f listFlags
	cmd := &cobra.Command{
		Use:     "ls [OPTIONS]",
		Aliases: []string{"list"},
		Short:   "List nodes",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.run(cmd, func(ctx context.Context, cl adminapi.AdminClient) error {
				resp, err := cl.ListNodes(ctx, &adminapi.ListNodesRequest{})
				if err != nil {
					return err
				}
				sortByName(resp.Nodes, func(n *types.Node) string { return n.GetDescription().GetHostname() })
				t := &table{header: nodeLsHeader}
				for _, n := range resp.Nodes {
					row := nodeRowOf(n, resp.Live[n.Id])
					t.add(row.ID, row, row.ID, row.Hostname, row.Status, row.ManagerStatus, row.AgentVersion, row.Grants)
				}
				return t.print(cmd.OutOrStdout(), f)
			})
		},
	}
	f.add(cmd)
	return cmd
}

// nodeInspect is a node as inspect shows it.
type nodeInspect struct {
	ID      string
	Version struct{ Index uint64 }
	CreatedAt,
	UpdatedAt time.Time
	Spec struct {
		Role   string
		Labels map[string]string
	}
	Description struct {
		Hostname     string
		Platform     struct{ OS, Architecture string }
		AgentVersion string
		Warnings     []string `json:",omitempty"`
	}
	// Reported is what the node's latest session said its hostname and
	// platform are, when that differs from Description (the one it joined
	// with, which placement uses).
	Reported *nodeReported `json:",omitempty"`
	Status   struct {
		State    string
		Addr     string
		LastSeen time.Time
		// ManagerStatus, LastHeartbeat and Grants are what the answering
		// manager knows now (nodeRow says how to read them).
		ManagerStatus string `json:",omitempty"`
		LastHeartbeat time.Time
		Grants        string
	}
	Certificate struct {
		Serial   string
		NotAfter time.Time
	}
}

type nodeReported struct {
	Hostname string
	Platform struct{ OS, Architecture string }
	Notes    []string `json:",omitempty"`
}

// inspectNode is n as inspect shows it. Every string a node could have
// written is made printable: the manager validates descriptions at join,
// and this keeps older records and other managers from reaching the
// terminal raw as well.
func inspectNode(n *types.Node, live *types.NodeLiveStatus) nodeInspect {
	v := nodeInspect{ID: printable(n.Id), CreatedAt: timeOf(n.GetMeta().GetCreatedAt()), UpdatedAt: timeOf(n.GetMeta().GetUpdatedAt())}
	v.Version.Index = n.GetMeta().GetVersion()
	v.Spec.Role = roleName(n.Role)
	v.Spec.Labels = nonNil(printableMap(n.GetSpec().GetLabels()))
	d := n.GetDescription()
	v.Description.Hostname = printable(d.GetHostname())
	v.Description.Platform.OS = printable(d.GetPlatform().GetOs())
	v.Description.Platform.Architecture = printable(d.GetPlatform().GetArchitecture())
	v.Description.AgentVersion = printable(d.GetAgentVersion())
	v.Description.Warnings = printableAll(d.GetWarnings())
	if r := n.GetReported(); r != nil {
		v.Reported = &nodeReported{Hostname: printable(r.GetHostname()), Notes: printableAll(r.GetWarnings())}
		v.Reported.Platform.OS = printable(r.GetPlatform().GetOs())
		v.Reported.Platform.Architecture = printable(r.GetPlatform().GetArchitecture())
	}
	v.Status.State = stateName(n.State)
	v.Status.Addr = printable(n.Addr)
	v.Status.LastSeen = timeOf(n.LastSeen)
	v.Status.ManagerStatus = managerStatus(n, live)
	v.Status.LastHeartbeat = timeOf(live.GetLastHeartbeat())
	v.Status.Grants = grantsHeld(live)
	v.Certificate.Serial = printable(n.GetCertificate().GetSerial())
	v.Certificate.NotAfter = timeOf(n.GetCertificate().GetNotAfter())
	return v
}

func newNodeInspectCommand(c *connFlags) *cobra.Command {
	return newInspectCommand(c, "node", "Show nodes in detail", func(ctx context.Context, cl adminapi.AdminClient, a string) (any, error) {
		resp, err := cl.GetNode(ctx, &adminapi.GetNodeRequest{NameOrId: a})
		if err != nil {
			return nil, err
		}
		return inspectNode(resp.Node, resp.Live), nil
	})
}

func newNodeUpdateCommand(c *connFlags) *cobra.Command {
	var labelAdd, labelRm []string
	cmd := &cobra.Command{
		Use:   "update [OPTIONS] NODE",
		Short: "Add or remove node labels (placement constraints match them)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			add, err := parseKeyValues("label-add", labelAdd)
			if err != nil {
				return err
			}
			return c.run(cmd, func(ctx context.Context, cl adminapi.AdminClient) error {
				for attempt := 1; ; attempt++ {
					cur, err := cl.GetNode(ctx, &adminapi.GetNodeRequest{NameOrId: args[0]})
					if err != nil {
						return err
					}
					spec := cur.Node.GetSpec()
					if spec == nil {
						spec = &types.NodeSpec{}
					}
					if spec.Labels == nil {
						spec.Labels = map[string]string{}
					}
					for _, k := range labelRm {
						if _, ok := spec.Labels[k]; !ok {
							return fmt.Errorf("--label-rm %s: node %s has no such label", k, cur.Node.Id)
						}
						delete(spec.Labels, k)
					}
					for k, v := range add {
						spec.Labels[k] = v
					}
					resp, err := cl.UpdateNode(ctx, &adminapi.UpdateNodeRequest{NameOrId: cur.Node.Id, Version: cur.Node.GetMeta().GetVersion(), Spec: spec})
					if codeOf(err) == codes.Aborted && attempt < maxUpdateAttempts {
						continue
					}
					if err != nil {
						return err
					}
					fmt.Fprintln(cmd.OutOrStdout(), resp.Node.Id)
					return nil
				}
			})
		},
	}
	cmd.Flags().StringArrayVar(&labelAdd, "label-add", nil, "add or change a label KEY=VALUE")
	cmd.Flags().StringArrayVar(&labelRm, "label-rm", nil, "remove a label")
	return cmd
}

func newNodeRmCommand(c *connFlags) *cobra.Command {
	var force bool
	cmd := newRmCommand(c, "node", "Remove nodes and revoke their certificates", func(ctx context.Context, cl adminapi.AdminClient, a string) error {
		_, err := cl.RemoveNode(ctx, &adminapi.RemoveNodeRequest{NameOrId: a, Force: force})
		return err
	})
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove a node that is still ready")
	return cmd
}

// printable returns s with every rune a terminal could act on (control
// characters, escape sequences, bidi and other format characters) written
// as a Go escape instead, so `node ls`/`node inspect` show what a node
// sent without letting it drive the operator's terminal.
func printable(s string) string {
	clean := utf8.ValidString(s)
	for _, r := range s {
		if !clean || !unicode.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for len(s) > 0 {
		r, size := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && size == 1: // not UTF-8
			fmt.Fprintf(&b, "\\x%02x", s[0])
		case !unicode.IsPrint(r):
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
		s = s[size:]
	}
	return b.String()
}

func printableAll(ss []string) []string {
	if ss == nil {
		return nil
	}
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = printable(s)
	}
	return out
}

func printableMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[printable(k)] = printable(v)
	}
	return out
}
