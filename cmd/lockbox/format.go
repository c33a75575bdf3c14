package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"
	"text/tabwriter"
	"text/template"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Output formatting shared by the ls and inspect verbs, in docker's shape
// (docker/cli cli/command/formatter): aligned tables, -q for IDs only,
// --format json (one object per line), "table TEMPLATE" (a header row
// derived from the fields, then a row per object) or a Go template applied
// to each row, with docker's escapes (\t, \n) and template functions.

// listFlags are the flags every ls verb takes.
type listFlags struct {
	quiet  bool
	format string
}

func (f *listFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVarP(&f.quiet, "quiet", "q", false, "only display IDs")
	cmd.Flags().StringVar(&f.format, "format", "table", "output format: table, json, 'table TEMPLATE' or a Go template such as '{{.Name}}'")
}

// table is rows of one kind: the header, each row's cells, each row's ID
// (for -q) and the object to render for json and templates. headers names
// the column of a template field ("CreatedAt": "CREATED"), as docker's
// SubHeaderContext does; a field it lacks is headed by its name in capitals.
type table struct {
	header  []string
	rows    [][]string
	ids     []string
	objects []any
	headers map[string]string
}

func (t *table) add(id string, obj any, cells ...string) {
	t.rows = append(t.rows, cells)
	t.ids = append(t.ids, id)
	t.objects = append(t.objects, obj)
}

// docker's tabwriter settings (formatter.Context.postFormat): minimum cell
// width 10, padding 3.
func newTabWriter(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 10, 1, 3, ' ', 0) }

// print renders t as f asks. As in docker, -q replaces only the default
// table: a custom format or json is printed as asked.
func (t *table) print(w io.Writer, f listFlags) error {
	switch {
	case (f.format == "" || f.format == "table") && f.quiet:
		for _, id := range t.ids {
			fmt.Fprintln(w, id)
		}
		return nil
	case f.format == "" || f.format == "table":
		tw := newTabWriter(w)
		fmt.Fprintln(tw, strings.Join(t.header, "\t"))
		for _, r := range t.rows {
			fmt.Fprintln(tw, strings.Join(r, "\t"))
		}
		return tw.Flush()
	case f.format == "json":
		// docker: "--format json" is the template {{json .}}, one line per row.
		for _, o := range t.objects {
			b, err := jsonLine(o)
			if err != nil {
				return err
			}
			fmt.Fprintln(w, b)
		}
		return nil
	}
	text, isTable := templateText(f.format)
	tmpl, err := parseTemplate(text)
	if err != nil {
		return err
	}
	var body bytes.Buffer
	for _, o := range t.objects {
		if err := tmpl.Execute(&body, o); err != nil {
			return fmt.Errorf("--format: template parsing error: %w", err)
		}
		body.WriteByte('\n')
	}
	if !isTable {
		_, err := body.WriteTo(w)
		return err
	}
	tw := newTabWriter(w)
	if err := tmpl.Funcs(headerFuncs).Execute(tw, t.headerContext()); err != nil {
		return fmt.Errorf("--format: template parsing error: %w", err)
	}
	tw.Write([]byte{'\n'})
	body.WriteTo(tw)
	return tw.Flush()
}

// templateText is docker's Format.templateString: a "table" prefix cut
// off (and reported), spaces trimmed, \t and \n written as the two
// characters turned into a tab and a newline.
func templateText(format string) (text string, isTable bool) {
	text, isTable = strings.CutPrefix(format, "table")
	text = strings.Trim(text, " ")
	return strings.NewReplacer(`\t`, "\t", `\n`, "\n").Replace(text), isTable
}

// headerContext is what a table template sees for its header row: each
// field's column name.
func (t *table) headerContext() headerCtx {
	h := headerCtx{}
	if len(t.objects) > 0 {
		if v := reflect.Indirect(reflect.ValueOf(t.objects[0])); v.Kind() == reflect.Struct {
			for i := 0; i < v.NumField(); i++ {
				if f := v.Type().Field(i); f.IsExported() {
					h[f.Name] = strings.ToUpper(f.Name)
				}
			}
		}
	}
	for k, v := range t.headers {
		h[k] = v
	}
	return h
}

// headerCtx is docker's SubHeaderContext: field name to column name.
type headerCtx map[string]string

// Label is the header of {{.Label "com.example.key"}}: the last dotted
// part, '-' and '_' as spaces (docker's SubHeaderContext.Label).
func (headerCtx) Label(name string) string {
	n := strings.Split(name, ".")
	return strings.NewReplacer("-", " ", "_", " ").Replace(n[len(n)-1])
}

// templateFuncs are docker's template functions (docker/cli templates).
var templateFuncs = template.FuncMap{
	"json":  func(v any) (string, error) { return jsonLine(v) },
	"split": strings.Split,
	"join": func(elems any, sep string) (string, error) {
		switch e := elems.(type) {
		case nil:
			return "", nil
		case []string:
			return strings.Join(e, sep), nil
		}
		rv := reflect.ValueOf(elems)
		if rv.Kind() != reflect.Slice && rv.Kind() != reflect.Array {
			return "", fmt.Errorf("join: expected a list, got %T", elems)
		}
		parts := make([]string, rv.Len())
		for i := range parts {
			parts[i] = fmt.Sprint(rv.Index(i).Interface())
		}
		return strings.Join(parts, sep), nil
	},
	"title": func(s string) string {
		if s == "" {
			return s
		}
		return strings.ToUpper(s[:1]) + s[1:]
	},
	"lower": strings.ToLower,
	"upper": strings.ToUpper,
	"pad": func(s string, prefix, suffix int) string {
		if s == "" {
			return s
		}
		return strings.Repeat(" ", prefix) + s + strings.Repeat(" ", suffix)
	},
	"truncate": func(s string, n int) string {
		if len(s) < n {
			return s
		}
		return s[:n]
	},
}

// headerFuncs replace the functions that would change a header (docker's
// templates.HeaderFunctions): the header keeps the column's name.
var headerFuncs = template.FuncMap{
	"json":     func(v string) string { return v },
	"split":    func(v, _ string) string { return v },
	"join":     func(v, _ string) string { return v },
	"title":    func(v string) string { return v },
	"lower":    func(v string) string { return v },
	"upper":    func(v string) string { return v },
	"truncate": func(v string, _ int) string { return v },
}

func parseTemplate(text string) (*template.Template, error) {
	tmpl, err := template.New("format").Funcs(templateFuncs).Parse(text)
	if err != nil {
		return nil, fmt.Errorf("--format: template parsing error: %w", err)
	}
	return tmpl, nil
}

// jsonLine is docker's json template function: compact, HTML left alone.
func jsonLine(v any) (string, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSpace(b.String()), nil
}

func executeTemplate(w io.Writer, text string, objects []any) error {
	tmpl, err := parseTemplate(text)
	if err != nil {
		return err
	}
	for _, o := range objects {
		if err := tmpl.Execute(w, o); err != nil {
			return fmt.Errorf("--format: template parsing error: %w", err)
		}
		fmt.Fprintln(w)
	}
	return nil
}

// printInspect writes objects as an indented JSON array, like docker
// inspect, or through a template when format is set.
// "--format json" prints them as one compact JSON array, as docker's
// inspect does (cli/command/inspect NewJSONInspector).
func printInspect(w io.Writer, format string, objects []any) error {
	if objects == nil {
		objects = []any{}
	}
	if format == "json" {
		b, err := json.Marshal(objects)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	}
	if format != "" {
		return executeTemplate(w, format, objects)
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

// sortByName orders objects by name, as docker's ls does: naturally
// (docker/cli secret/ls.go sorts with sortorder.NaturalLess), so 2-foo
// comes before 10-foo.
func sortByName[T any](objs []T, name func(T) string) {
	sort.SliceStable(objs, func(i, j int) bool { return naturalLess(name(objs[i]), name(objs[j])) })
}

// naturalLess compares strings with runs of digits compared as numbers
// (leading zeros aside; of equal numbers, the one with fewer zeros first),
// everything else byte by byte, like github.com/fvbommel/sortorder.
func naturalLess(a, b string) bool {
	isDigit := func(c byte) bool { return c >= '0' && c <= '9' }
	for a != "" && b != "" {
		if !isDigit(a[0]) || !isDigit(b[0]) {
			if a[0] != b[0] {
				return a[0] < b[0]
			}
			a, b = a[1:], b[1:]
			continue
		}
		i, j := 0, 0
		for i < len(a) && isDigit(a[i]) {
			i++
		}
		for j < len(b) && isDigit(b[j]) {
			j++
		}
		na, nb := strings.TrimLeft(a[:i], "0"), strings.TrimLeft(b[:j], "0")
		if len(na) != len(nb) {
			return len(na) < len(nb)
		}
		if na != nb {
			return na < nb
		}
		if i != j {
			return i < j
		}
		a, b = a[i:], b[j:]
	}
	return len(a) < len(b)
}

// nonNil makes labels print as {} rather than null, as docker's do.
func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
