package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
)

func newAuditCommand(c *connFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Read the managers' audit log"}
	cmd.AddCommand(newAuditLsCommand(c))
	return cmd
}

// auditRow is an audit entry as ls shows it (and --format sees it).
type auditRow struct {
	ID        string
	Time      time.Time
	Actor     string
	Action    string
	Kind      string
	ObjectID  string
	Object    string
	Node      string
	Secrets   []string
	Container string
}

func auditRowOf(e *types.AuditEntry) auditRow {
	return auditRow{
		ID: printable(e.GetId()), Time: timeOf(e.GetTime()), Actor: printable(e.GetActor()), Action: printable(e.GetAction()),
		Kind: printable(e.GetObjectKind()), ObjectID: printable(e.GetObjectId()), Object: printable(e.GetObjectName()),
		Node: printable(e.GetNodeId()), Secrets: printableAll(e.GetSecrets()), Container: printable(e.GetContainer()),
	}
}

func newAuditLsCommand(c *connFlags) *cobra.Command {
	var f listFlags
	var since string
	cmd := &cobra.Command{
		Use:     "ls [OPTIONS]",
		Aliases: []string{"list"},
		Short:   "List audit entries, oldest first: who changed secrets, services and nodes, and which node was sent which grants",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &adminapi.ListAuditRequest{}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return err
				}
				req.Since = timestamppb.New(t)
			}
			return c.run(cmd, func(ctx context.Context, cl adminapi.AdminClient) error {
				t := &table{header: []string{"TIME", "ACTOR", "ACTION", "OBJECT", "NODE", "SECRETS"}}
				for {
					resp, err := cl.ListAudit(ctx, req)
					if err != nil {
						return err
					}
					for _, e := range resp.Entries {
						r := auditRowOf(e)
						// An object with no name (admin credentials) is
						// shown by its ID.
						name := r.Object
						if name == "" {
							name = r.ObjectID
						}
						obj := strings.TrimSpace(r.Kind + " " + name)
						t.add(r.ID, r, r.Time.UTC().Format(time.RFC3339), r.Actor, r.Action, obj, r.Node, strings.Join(r.Secrets, ","))
					}
					if resp.NextPage == "" {
						break
					}
					req.After = resp.NextPage
				}
				return t.print(cmd.OutOrStdout(), f)
			})
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&since, "since", "", "only entries from this time on: a duration back from now (10m, 24h) or a time (2026-01-02T15:04:05Z, 2026-01-02, Unix seconds)")
	return cmd
}

// parseSince reads --since as docker's --since does: a Go duration counted
// back from now, an RFC 3339 time, a date, or Unix seconds.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--since %s: give a positive duration (how far back)", s)
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	// Without a zone, local time (docker's timetypes.GetTimestamp).
	for _, layout := range []string{"2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	if sec, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(sec, 0), nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want a duration (10m, 24h), an RFC 3339 time (2026-01-02T15:04:05Z), a date (2026-01-02) or Unix seconds", s)
}
