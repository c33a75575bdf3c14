package main

import (
	"context"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// These tests hold Lockbox to docker's behaviour where the concept is the
// same. Each quotes what docker prints, from docker/cli's source
// (cli/command/secret/formatter.go, ls.go, inspect.go, opts/swarmopts,
// service/update.go) or its reference pages
// (docs/reference/commandline/secret_ls.md, secret_inspect.md).

// lines splits output into lines without the final newline.
func lines(out string) []string { return strings.Split(strings.TrimSuffix(out, "\n"), "\n") }

// spaces collapses runs of spaces, so a table row compares by its cells.
var spaces = regexp.MustCompile(` {2,}`)

// recently is docker's human duration of a secret made moments ago
// (units.HumanDuration), whichever second the test is in: it becomes AGO.
var recently = regexp.MustCompile(`(Less than a second|[0-9]+ seconds?|About a minute) ago`)

func TestDockerSecretLsFilter(t *testing.T) {
	e := newCLIEnv(t, "")
	ids := map[string]string{}
	for _, c := range []struct{ name, labels string }{
		{"db_pw", "project=project-a"}, {"db_cache", "project=project-b"}, {"test_secret", "project"}, {"web_tls", ""},
	} {
		args := []string{"secret", "create", c.name, "-"}
		if c.labels != "" {
			args = append(args, "--label", c.labels)
		}
		ids[c.name] = strings.TrimSpace(e.mustRun(t, "x", args...))
	}
	tests := []struct {
		name  string
		args  []string
		want  []string // names, in order
		error string
	}{
		// secret_ls.md: "The name filter matches on all or prefix of a
		// secret's name." `docker secret ls -qf name=X` prints IDs only.
		{"name prefix", []string{"--filter", "name=db"}, []string{"db_cache", "db_pw"}, ""},
		{"name whole", []string{"-f", "name=test_secret"}, []string{"test_secret"}, ""},
		// swarm's name index is lower-cased: the prefix matches without case.
		{"name without case", []string{"-f", "name=DB_P"}, []string{"db_pw"}, ""},
		// moby daemon/cluster/filters.go: names= is the whole name.
		{"names exact", []string{"-f", "names=db"}, nil, ""},
		{"names", []string{"-f", "names=DB_PW"}, []string{"db_pw"}, ""},
		// secret_ls.md: "The id filter matches all or prefix of a secret's id."
		{"id prefix", []string{"-f", "id=" + ids["web_tls"][:6]}, []string{"web_tls"}, ""},
		// secret_ls.md: "matches secrets based on the presence of a label
		// alone or a label and a value".
		{"label", []string{"--filter", "label=project"}, []string{"db_cache", "db_pw", "test_secret"}, ""},
		{"label=value", []string{"--filter", "label=project=project-a"}, []string{"db_pw"}, ""},
		// Values of name, names and id are alternatives (swarmkit ORs them).
		{"two names", []string{"-f", "name=web", "-f", "name=test"}, []string{"test_secret", "web_tls"}, ""},
		{"name or id", []string{"-f", "name=web", "-f", "id=" + ids["db_pw"]}, []string{"db_pw", "web_tls"}, ""},
		// Labels must all hold, and with a name too.
		{"name and label", []string{"-f", "name=db", "-f", "label=project=project-b"}, []string{"db_cache"}, ""},
		{"two labels", []string{"-f", "label=project", "-f", "label=project=project-a"}, []string{"db_pw"}, ""},
		// docker: "invalid filter 'foo'" (daemon) and "bad format of
		// filter (expected name=value)" (opts.FilterOpt).
		{"unknown key", []string{"-f", "foo=bar"}, nil, "invalid filter 'foo'"},
		{"no =", []string{"-f", "name"}, nil, "bad format of filter (expected name=value)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := e.run(t, "", append([]string{"secret", "ls", "--format", "{{.Name}}"}, tt.args...)...)
			if tt.error != "" {
				if err == nil || !strings.Contains(err.Error(), tt.error) {
					t.Fatalf("got %v, want an error containing %q", err, tt.error)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := []string{}
			if out != "" {
				got = lines(out)
			}
			if !slices.Equal(got, append([]string{}, tt.want...)) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
	// The exact form a migrated script runs.
	if out := e.mustRun(t, "", "secret", "ls", "-qf", "name=web"); out != ids["web_tls"]+"\n" {
		t.Fatalf("secret ls -qf name=web: %q", out)
	}
}

func TestDockerSecretLsFormat(t *testing.T) {
	e := newCLIEnv(t, "")
	for _, n := range []string{"10-foo", "2-foo", "1-foo"} {
		e.mustRun(t, "x", "secret", "create", n, "-")
	}
	id := strings.TrimSpace(e.mustRun(t, "x", "secret", "create", "--label", "env=prod", "--label", "app=web", "web", "-"))

	// docker/cli secret/ls.go sorts with sortorder.NaturalLess.
	if out := e.mustRun(t, "", "secret", "ls", "--format", "{{.Name}}"); out != "1-foo\n2-foo\n10-foo\nweb\n" {
		t.Fatalf("natural order: %q", out)
	}

	tests := []struct {
		name   string
		format string
		filter string
		want   []string // lines, runs of spaces collapsed to two
	}{
		// formatter.go: defaultSecretTableFormat = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.CreatedAt}}\t{{.UpdatedAt}}",
		// headers ID, NAME, DRIVER, CREATED, UPDATED; Driver is "" without a driver.
		{"default table", "", "name=web", []string{"ID  NAME  DRIVER  CREATED  UPDATED", id + "  web  AGO  AGO"}},
		// secret_ls.md: docker secret ls --format "table {{.ID}}\t{{.Name}}\t{{.CreatedAt}}"
		//   ID                  NAME                      CREATED
		//   77af4d6b9913        secret-1                  5 minutes ago
		{"table template", `table {{.ID}}\t{{.Name}}\t{{.CreatedAt}}`, "name=web", []string{"ID  NAME  CREATED", id + "  web  AGO"}},
		{"table with a header from .Label", `table {{.Name}}\t{{.Label "com.example.app-name"}}`, "name=web", []string{"NAME  app name", "web"}},
		// secret_ls.md: docker secret ls --format "{{.ID}}: {{.Name}}" -> "77af4d6b9913: secret-1"
		{"template", "{{.ID}}: {{.Name}}", "name=web", []string{id + ": web"}},
		// formatter.go Labels(): "k=v" sorted, joined with ",".
		{"labels", "{{.Labels}}", "name=web", []string{"app=web,env=prod"}},
		{"no labels", "[{{.Labels}}]", "name=1-", []string{"[]"}},
		{"one label", `{{.Label "env"}}/{{.Label "none"}}`, "name=web", []string{"prod/"}},
		// formatter.Format.templateString: \t and \n written as two
		// characters become a tab and a newline.
		{"escapes", `{{.Name}}\n{{.Driver}}x\t{{.UpdatedAt}}`, "name=web", []string{"web", "x\tAGO"}},
		{"docker functions", `{{upper .Name}} {{json .Name}} {{join (split .Labels ",") "+"}}`, "name=web", []string{`WEB "web" app=web+env=prod`}},
		// -q replaces only the default table (newFormat(source, quiet)).
		{"quiet with a template", "{{.Name}}", "name=web", []string{"web"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"secret", "ls", "-f", tt.filter}
			if tt.format != "" {
				args = append(args, "--format", tt.format)
			}
			if tt.name == "quiet with a template" {
				args = append(args, "-q")
			}
			var got []string
			for _, l := range lines(e.mustRun(t, "", args...)) {
				l = recently.ReplaceAllString(l, "AGO")
				got = append(got, spaces.ReplaceAllString(strings.TrimRight(l, " "), "  "))
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("--format %q:\n got %q\nwant %q", tt.format, got, tt.want)
			}
		})
	}

	// secret_ls.md: docker secret ls --format json
	// {"CreatedAt":"28 seconds ago","Driver":"","ID":"4y7hvwrt1u8e9uxh5ygqj7mzc","Labels":"","Name":"mysecret","UpdatedAt":"28 seconds ago"}
	out := recently.ReplaceAllString(e.mustRun(t, "", "secret", "ls", "--format", "json", "-f", "name=web"), "AGO")
	want := `{"CreatedAt":"AGO","Driver":"","ID":"` + id + `","Labels":"app=web,env=prod","Name":"web","UpdatedAt":"AGO"}` + "\n"
	if out != want {
		t.Fatalf("--format json:\n got %s\nwant %s", out, want)
	}
	if out := recently.ReplaceAllString(e.mustRun(t, "", "secret", "ls", "--format", "{{json .}}", "-f", "name=web"), "AGO"); out != want {
		t.Fatalf("--format '{{json .}}':\n got %s\nwant %s", out, want)
	}
	// Docker's default table lines up with its tabwriter (minimum width
	// 10, padding 3): the header's columns start where the rows' do.
	tbl := lines(e.mustRun(t, "", "secret", "ls"))
	if col := strings.Index(tbl[0], "NAME"); col != len(id)+3 || strings.Index(tbl[1], "1-foo") != col {
		t.Fatalf("default table is not aligned as docker's:\n%s", strings.Join(tbl, "\n"))
	}
}

func TestDockerSecretInspect(t *testing.T) {
	e := newCLIEnv(t, "")
	id := strings.TrimSpace(e.mustRun(t, "x", "secret", "create", "--label", "env=dev", "--label", "flag", "my_secret", "-"))
	sec, err := e.store.GetSecret(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	created := sec.Meta.CreatedAt.AsTime().UTC().String()

	// docker: "--format json" is one compact JSON array
	// (cli/command/inspect NewJSONInspector), the same objects as the
	// default indented array.
	out := e.mustRun(t, "", "secret", "inspect", "--format", "json", "my_secret")
	var arr []map[string]any
	if err := json.Unmarshal([]byte(out), &arr); err != nil || len(arr) != 1 || arr[0]["ID"] != id || strings.Count(out, "\n") != 1 {
		t.Fatalf("inspect --format json: %v\n%s", err, out)
	}
	if out == "json\n" {
		t.Fatal("inspect --format json printed the word json")
	}

	// formatter.go secretInspectPrettyTemplate (and secret_inspect.md):
	//   ID:              ktnbjxoalbkvbvedmg1urrz8h
	//   Name:              app-dev.crt
	//   Driver:
	//   Created at:        2017-03-24 08:15:09.735271783 +0000 UTC
	//   Updated at:        2017-03-24 08:15:09.735271783 +0000 UTC
	// with "Labels:" and " - k=v" (" - k" for an empty value) when there are labels.
	want := "ID:              " + id + "\n" +
		"Name:              my_secret\n" +
		"Labels:\n" +
		" - env=dev\n" +
		" - flag\n" +
		"Driver:            \n" +
		"Created at:        " + created + "\n" +
		"Updated at:        " + created + "\n"
	for _, args := range [][]string{{"--pretty"}, {"--format", "pretty"}} {
		out := e.mustRun(t, "", append(append([]string{"secret", "inspect"}, args...), "my_secret")...)
		if out != want {
			t.Fatalf("inspect %s:\n got %q\nwant %q", args, out, want)
		}
	}
	if !strings.HasSuffix(created, " +0000 UTC") {
		t.Fatalf("created %q is not docker's time.Time String form", created)
	}
	// docker/cli secret/inspect.go: "cannot supply extra formatting options to the pretty template".
	if _, err := e.run(t, "", "secret", "inspect", "--format", "pretty{{.ID}}", "my_secret"); err == nil ||
		err.Error() != "cannot supply extra formatting options to the pretty template" {
		t.Fatalf("pretty with a template: %v", err)
	}
	// A missing one is reported and the status is non-zero, the others printed.
	out, err = e.run(t, "", "secret", "inspect", "--pretty", "my_secret", "nope")
	if err == nil || !strings.Contains(err.Error(), "secret 'nope' not found") || !strings.HasPrefix(out, "ID:") {
		t.Fatalf("pretty with a missing secret: %v\n%s", err, out)
	}
}

func TestDockerSecretCreateDriver(t *testing.T) {
	e := newCLIEnv(t, "")
	tests := []struct {
		args []string
		want string
	}{
		// docker secret create --driver D NAME (no file: the driver holds the data).
		{[]string{"secret", "create", "--driver", "vault", "pw"}, "--driver vault: Lockbox has no secret drivers (yet)"},
		{[]string{"secret", "create", "-d", "vault", "pw", "-"}, "--driver vault: Lockbox has no secret drivers (yet)"},
		{[]string{"secret", "create", "--template-driver", "golang", "pw", "-"}, "--template-driver golang: Lockbox has no template drivers (yet)"},
	}
	for _, tt := range tests {
		_, err := e.run(t, "x", tt.args...)
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "unknown flag") {
			t.Errorf("lockbox %s: %v, want %q", strings.Join(tt.args, " "), err, tt.want)
		}
	}
	if out := e.mustRun(t, "", "secret", "ls", "-q"); out != "" {
		t.Fatalf("a refused create left a secret: %q", out)
	}
}

func TestDockerServiceCompat(t *testing.T) {
	e := newCLIEnv(t, "")
	e.mustRun(t, "x", "secret", "create", "db_pw", "-")
	e.mustRun(t, "y", "secret", "create", "db_pw_v2", "-")
	e.mustRun(t, "", "service", "create", "web", "--secret", "source=db_pw,target=pw,mode=0o440")

	// docker/cli service/update.go getUpdatedSecrets drops the references
	// named in --secret-rm and checks nothing else: a rotation run twice
	// succeeds the second time.
	rotate := []string{"service", "update", "web", "--secret-rm", "db_pw", "--secret-rm", "db_pw_v2", "--secret-add", "source=db_pw_v2,target=pw,mode=0440"}
	e.mustRun(t, "", rotate...)
	e.mustRun(t, "", rotate...)
	e.mustRun(t, "", "service", "update", "web", "--secret-rm", "never_there")
	svc, err := e.store.GetService(context.Background(), "web")
	if err != nil || len(svc.Spec.Secrets) != 1 || svc.Spec.Secrets[0].SecretName != "db_pw_v2" || svc.Spec.Secrets[0].Target.Mode != 0o440 {
		t.Fatalf("after the rotations: %v %v", svc.GetSpec(), err)
	}

	// moby api/types/swarm SecretReferenceFileTarget.Mode is an
	// os.FileMode: a number in JSON ("Mode": 288 for 0440).
	var insp []struct {
		Spec struct {
			Secrets []struct{ File struct{ Mode any } }
		}
	}
	out := e.mustRun(t, "", "service", "inspect", "web")
	if err := json.Unmarshal([]byte(out), &insp); err != nil || len(insp) != 1 || insp[0].Spec.Secrets[0].File.Mode != float64(288) {
		t.Fatalf("service inspect File.Mode: %v\n%s", err, out)
	}

	// mode= as docker reads it (strconv.ParseUint(val, 0, 32)), and a
	// plain number both readings accept differently refused.
	modes := []struct {
		mode string
		want uint32 // 0: refused
		err  string
	}{
		{"0440", 0o440, ""}, {"0o440", 0o440, ""}, {"292", 292, ""}, {"0x124", 0o444, ""}, {"7", 7, ""},
		{"440", 0, "mode=440 is ambiguous: docker reads it as decimal 440 (0670), earlier Lockbox read it as octal 0440 (288); write 0440 or 0o440 (or decimal 288) for octal 440, or 0670 for docker's reading"},
		{"0", 0, "readable only by root"},
		{"0o9", 0, `invalid mode "0o9"`},
	}
	for _, m := range modes {
		got, err := parseFileMode(m.mode)
		if m.err != "" {
			if err == nil || !strings.Contains(err.Error(), m.err) {
				t.Errorf("mode=%s: %v, want %q", m.mode, err, m.err)
			}
			continue
		}
		if err != nil || got != m.want {
			t.Errorf("mode=%s = %#o, %v; want %#o", m.mode, got, err, m.want)
		}
	}

	// Names: swarm's index is without case, and service names follow
	// swarm's service rule.
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"secret", "create", "DB_pw", "-"}, "secret 'DB_pw' already exists: names compare without regard to case, as in swarm, and secret 'db_pw' has this one"},
		{[]string{"service", "create", "WEB"}, "service 'WEB' already exists"},
		// swarmkit: "name must be valid as a DNS name component".
		{[]string{"service", "create", "my.web"}, `invalid service name "my.web": a service name has letters, digits, '-' and '_'`},
	} {
		if _, err := e.run(t, "z", tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("lockbox %s: %v, want %q", strings.Join(tt.args, " "), err, tt.want)
		}
	}
	// Found by name without case, as docker's daemon finds it.
	if out := e.mustRun(t, "", "secret", "inspect", "--format", "{{.Spec.Name}}", "DB_PW"); out != "db_pw\n" {
		t.Fatalf("inspect DB_PW: %q", out)
	}
}
