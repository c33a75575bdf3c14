package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"text/template"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Output formatting shared by the ls and inspect verbs, in docker's shape:
// aligned tables, -q for IDs only, --format json (one object per line) or
// a Go template applied to each row.

// listFlags are the flags every ls verb takes.
type listFlags struct {
	quiet  bool
	format string
}

func (f *listFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVarP(&f.quiet, "quiet", "q", false, "only display IDs")
	cmd.Flags().StringVar(&f.format, "format", "table", "output format: table, json, or a Go template such as '{{.Name}}'")
}

// table is rows of one kind: the header, each row's cells, each row's ID
// (for -q) and the object to render for json and templates.
type table struct {
	header  []string
	rows    [][]string
	ids     []string
	objects []any
}

func (t *table) add(id string, obj any, cells ...string) {
	t.rows = append(t.rows, cells)
	t.ids = append(t.ids, id)
	t.objects = append(t.objects, obj)
}

// print renders t as f asks.
func (t *table) print(w io.Writer, f listFlags) error {
	if f.quiet {
		for _, id := range t.ids {
			fmt.Fprintln(w, id)
		}
		return nil
	}
	switch f.format {
	case "", "table":
		tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
		fmt.Fprintln(tw, strings.Join(t.header, "\t"))
		for _, r := range t.rows {
			fmt.Fprintln(tw, strings.Join(r, "\t"))
		}
		return tw.Flush()
	case "json":
		enc := json.NewEncoder(w)
		for _, o := range t.objects {
			if err := enc.Encode(o); err != nil {
				return err
			}
		}
		return nil
	default:
		return executeTemplate(w, f.format, t.objects)
	}
}

func executeTemplate(w io.Writer, text string, objects []any) error {
	tmpl, err := template.New("format").Funcs(template.FuncMap{
		"json": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
		"join": strings.Join,
	}).Parse(text)
	if err != nil {
		return fmt.Errorf("--format: %w", err)
	}
	for _, o := range objects {
		if err := tmpl.Execute(w, o); err != nil {
			return fmt.Errorf("--format: %w", err)
		}
		fmt.Fprintln(w)
	}
	return nil
}

// printInspect writes objects as an indented JSON array, like docker
// inspect, or through a template when format is set.
func printInspect(w io.Writer, format string, objects []any) error {
	if format != "" {
		return executeTemplate(w, format, objects)
	}
	if objects == nil {
		objects = []any{}
	}
	b, err := json.MarshalIndent(objects, "", "    ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

// timeOf converts a protobuf timestamp; the zero time when unset.
func timeOf(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

// ago is docker's human duration: "2 minutes ago".
func ago(t time.Time, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	return humanDuration(now.Sub(t)) + " ago"
}

// humanDuration follows docker's units.HumanDuration.
func humanDuration(d time.Duration) string {
	if s := int(d.Seconds()); s < 1 {
		return "Less than a second"
	} else if s == 1 {
		return "1 second"
	} else if s < 60 {
		return fmt.Sprintf("%d seconds", s)
	}
	if m := int(d.Minutes()); m == 1 {
		return "About a minute"
	} else if m < 60 {
		return fmt.Sprintf("%d minutes", m)
	}
	if h := int(d.Round(time.Hour).Hours()); h == 1 {
		return "About an hour"
	} else if h < 48 {
		return fmt.Sprintf("%d hours", h)
	} else if h < 24*7*2 {
		return fmt.Sprintf("%d days", h/24)
	} else if h < 24*30*2 {
		return fmt.Sprintf("%d weeks", h/24/7)
	} else if h < 24*365*2 {
		return fmt.Sprintf("%d months", h/24/30)
	}
	return fmt.Sprintf("%d years", int(d.Hours())/24/365)
}

// parseKeyValues parses repeated k=v flags (a bare k means an empty value).
func parseKeyValues(flag string, kvs []string) (map[string]string, error) {
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, _ := strings.Cut(kv, "=")
		if k == "" {
			return nil, fmt.Errorf("--%s %q: want KEY=VALUE", flag, kv)
		}
		out[k] = v
	}
	return out, nil
}

// sortByName orders objects by name, as docker's ls does.
func sortByName[T any](objs []T, name func(T) string) {
	sort.SliceStable(objs, func(i, j int) bool { return name(objs[i]) < name(objs[j]) })
}

// nonNil makes labels print as {} rather than null, as docker's do.
func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
