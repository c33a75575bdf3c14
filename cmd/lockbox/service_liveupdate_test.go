package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/store"
)

// TestCLILiveUpdate: --live-update on create (alone it means true), kept
// by an update that does not name it, changed by --live-update=BOOL;
// signal= stored as written and shown by inspect; an update that would
// leave a signal without live update is refused before it is sent.
func TestCLILiveUpdate(t *testing.T) {
	e := newCLIEnv(t, "")
	e.mustRun(t, "x", "secret", "create", "pw", "-")
	e.mustRun(t, "y", "secret", "create", "cert", "-")
	e.mustRun(t, "", "service", "create", "web", "--live-update", "--secret", "source=pw,target=app/pw,signal=hup", "--secret", "cert")
	e.mustRun(t, "", "service", "create", "plain", "--secret", "pw")

	live := func(name string) (bool, []string) {
		t.Helper()
		s := e.service(t, name)
		var sigs []string
		for _, r := range s.Spec.Secrets {
			sigs = append(sigs, r.Signal)
		}
		return s.Spec.LiveUpdate, sigs
	}
	if on, sigs := live("web"); !on || strings.Join(sigs, ",") != "hup," {
		t.Fatalf("web: live update %v, signals %q; want on, [hup \"\"]", on, sigs)
	}
	if on, _ := live("plain"); on {
		t.Fatal("plain: live update on by default")
	}

	var insp []struct {
		Spec struct {
			LiveUpdate *bool
			Secrets    []map[string]any
		}
	}
	out := e.mustRun(t, "", "service", "inspect", "web", "plain")
	if err := json.Unmarshal([]byte(out), &insp); err != nil || len(insp) != 2 {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	if insp[0].Spec.LiveUpdate == nil || !*insp[0].Spec.LiveUpdate || insp[0].Spec.Secrets[0]["Signal"] != "hup" {
		t.Fatalf("inspect web:\n%s", out)
	}
	if _, ok := insp[0].Spec.Secrets[1]["Signal"]; ok {
		t.Fatalf("inspect shows a Signal for a reference without one:\n%s", out)
	}
	if insp[1].Spec.LiveUpdate == nil || *insp[1].Spec.LiveUpdate {
		t.Fatalf("inspect plain must show LiveUpdate false:\n%s", out)
	}

	// An update that does not name the flag keeps it.
	e.mustRun(t, "", "service", "update", "web", "--label-add", "a=b")
	if on, _ := live("web"); !on {
		t.Fatal("an update without --live-update turned it off")
	}
	// Turning it off while a reference has a signal is refused.
	_, err := e.run(t, "", "service", "update", "web", "--live-update=false")
	if err == nil || !strings.Contains(err.Error(), "service 'web': secret reference 'pw': signal=hup needs --live-update") {
		t.Fatalf("--live-update=false with a signal: %v", err)
	}
	// Adding a signal to a service without live update is refused too.
	_, err = e.run(t, "", "service", "update", "plain", "--secret-rm", "pw", "--secret-add", "source=pw,signal=SIGUSR1")
	if err == nil || !strings.Contains(err.Error(), "signal=SIGUSR1 needs --live-update") {
		t.Fatalf("a signal on a service without live update: %v", err)
	}
	// The same with --live-update given is accepted.
	e.mustRun(t, "", "service", "update", "plain", "--live-update", "--secret-rm", "pw", "--secret-add", "source=pw,signal=SIGUSR1")
	if on, sigs := live("plain"); !on || strings.Join(sigs, ",") != "SIGUSR1" {
		t.Fatalf("plain: live update %v, signals %q", on, sigs)
	}
	// Rotation keeps the flag: the reference is replaced, the signal with it.
	e.mustRun(t, "y2", "secret", "create", "pw2", "-")
	e.mustRun(t, "", "service", "update", "web", "--secret-rm", "pw", "--secret-add", "source=pw2,target=app/pw")
	e.mustRun(t, "", "service", "update", "web", "--live-update=false")
	if on, sigs := live("web"); on || strings.Join(sigs, ",") != "," {
		t.Fatalf("web after rotation and off: live update %v, signals %q", on, sigs)
	}
}

// TestCLISignalErrorsBeforeSending: bad signals are refused by the CLI
// itself, naming the reference, before any connection: the manager given
// here does not exist.
func TestCLISignalErrorsBeforeSending(t *testing.T) {
	host := "unix://" + filepath.Join(t.TempDir(), "none.sock")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"service", "create", "s", "--live-update", "--secret", "source=pw,signal=SIGFOO"}, `--secret "source=pw,signal=SIGFOO": invalid signal: SIGFOO`},
		{[]string{"service", "create", "s", "--live-update", "--secret", "source=pw,signal=KILL"}, "may not kill or stop the container"},
		{[]string{"service", "create", "s", "--live-update", "--secret", "source=pw,signal=0"}, "invalid signal: 0"},
		{[]string{"service", "create", "s", "--secret", "source=pw,signal=SIGHUP"}, "secret reference 'pw': signal=SIGHUP needs --live-update"},
		{[]string{"service", "create", "s", "--live-update=false", "--secret", "source=pw,signal=HUP"}, "signal=HUP needs --live-update"},
		{[]string{"service", "create", "s", "--live-update", "--constraint", "node.platform.os==windows", "--secret", "source=pw,signal=HUP"},
			"secret reference 'pw': signal=HUP: Windows containers cannot take signals"},
		{[]string{"service", "create", "s", "--secret", "source=pw,sig=HUP"}, `unknown field "sig" (want source, target, uid, gid, mode, signal)`},
		{[]string{"service", "update", "s", "--secret-add", "source=pw,signal=STOP"}, "may not kill or stop the container"},
		{[]string{"service", "update", "s", "--live-update=maybe"}, `invalid argument "maybe" for "--live-update"`},
		{[]string{"service", "ps", "s", "-f", "desired-state=running"}, "invalid filter 'desired-state': service ps filters on id, node, state"},
	} {
		root := newRootCommand()
		root.SetArgs(append([]string{"-H", host, "--timeout", "5s"}, tt.args...))
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "cannot reach") {
			t.Errorf("lockbox %s: %v, want an error containing %q", strings.Join(tt.args, " "), err, tt.want)
		}
	}
}

// TestCLIServicePs: the containers the nodes reported, with docker's ps
// conventions: 12-character IDs unless --no-trunc, -q, a quoted error cut
// to 30 characters, --format json and templates, -f node=.
func TestCLIServicePs(t *testing.T) {
	e := newCLIEnv(t, "")
	ctx := context.Background()
	e.mustRun(t, "x", "secret", "create", "pw", "-")
	e.mustRun(t, "", "service", "create", "web", "--live-update", "--secret", "pw")
	e.mustRun(t, "", "service", "create", "idle", "--secret", "pw")
	svc, pw := e.service(t, "web"), e.service(t, "web").Spec.Secrets[0].SecretId
	nodeA, err := e.store.CreateNode(ctx, &types.Node{Description: &types.NodeDescription{Hostname: "node-a", Platform: &types.Platform{Os: "linux"}}})
	if err != nil {
		t.Fatal(err)
	}
	long := "0123456789ab" + strings.Repeat("c", 52) // a 64-character ID, as containerd's clients make
	failure := "rename /run/secrets/pw: device or resource busy"
	reports := map[string][]store.ContainerReport{
		nodeA.Id: {
			{ContainerID: long, ServiceID: svc.Id, State: store.ContainerUpdated, Secrets: []store.ContainerSecret{{ID: pw, Name: "pw"}}},
			{ContainerID: "b-short", ServiceID: svc.Id, State: store.ContainerUpdateFailed, Error: failure, Secrets: []store.ContainerSecret{{Name: "pw"}}},
		},
		"removednode": {{ContainerID: "c-gone", ServiceID: svc.Id, State: store.ContainerMounted, Secrets: []store.ContainerSecret{{ID: pw, Name: "pw"}}}},
	}
	for n, rs := range reports {
		if _, err := e.store.ApplyContainerReports(ctx, n, rs); err != nil {
			t.Fatal(err)
		}
	}

	out := e.mustRun(t, "", "service", "ps", "web")
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("service ps:\n%s", out)
	}
	for _, col := range []string{"ID", "NAME", "NODE", "SECRETS", "CURRENT STATE", "ERROR"} {
		if !strings.Contains(lines[0], col) {
			t.Fatalf("header %q lacks %s", lines[0], col)
		}
	}
	want := []struct{ has, hasNot []string }{
		{[]string{"0123456789ab ", "web", "node-a", "pw@" + pw[:12], "Updated less than a second ago"}, []string{long, pw}},
		{[]string{"b-short", "node-a", "pw ", "Update failed", `"rename /run/secrets/pw: devic…"`}, []string{failure}},
		{[]string{"c-gone", "removednode (removed)", "Mounted"}, nil},
	}
	for i, w := range want {
		for _, s := range w.has {
			if !strings.Contains(lines[i+1], s) {
				t.Errorf("row %d %q lacks %q", i+1, lines[i+1], s)
			}
		}
		for _, s := range w.hasNot {
			if strings.Contains(lines[i+1], s) {
				t.Errorf("row %d %q has %q", i+1, lines[i+1], s)
			}
		}
	}

	out = e.mustRun(t, "", "service", "ps", "--no-trunc", "web")
	if !strings.Contains(out, long) || !strings.Contains(out, "pw@"+pw) || !strings.Contains(out, `"`+failure+`"`) {
		t.Fatalf("--no-trunc:\n%s", out)
	}
	if out := e.mustRun(t, "", "service", "ps", "-q", "web"); out != "0123456789ab\nb-short\nc-gone\n" {
		t.Fatalf("-q:\n%s", out)
	}
	if out := e.mustRun(t, "", "service", "ps", "-q", "-f", "node=node-a", "-f", "state=update-failed", "web"); out != "b-short\n" {
		t.Fatalf("-f node=node-a -f state=update-failed:\n%s", out)
	}
	if out := e.mustRun(t, "", "service", "ps", "-q", "-f", "node="+nodeA.Id, "-f", "id=0123", "web"); out != "0123456789ab\n" {
		t.Fatalf("-f node=ID -f id=0123:\n%s", out)
	}
	out = e.mustRun(t, "", "service", "ps", "--no-resolve", "--format", "{{.Name}} {{.Node}}", "-f", "node=node-a", "-f", "id=b-", "web")
	if out != svc.Id+" "+nodeA.Id+"\n" {
		t.Fatalf("--no-resolve:\n%s", out)
	}
	out = e.mustRun(t, "", "service", "ps", "--format", "json", "web")
	var first map[string]any
	if err := json.Unmarshal([]byte(strings.Split(out, "\n")[0]), &first); err != nil {
		t.Fatalf("--format json: %v\n%s", err, out)
	}
	if first["ID"] != "0123456789ab" || first["Node"] != "node-a" || first["Name"] != "web" || first["CurrentState"] == nil {
		t.Fatalf("--format json: %v", first)
	}
	out = e.mustRun(t, "", "service", "ps", "--format", "table {{.ID}}\t{{.CurrentState}}", "-f", "id=c-", "web")
	if !strings.HasPrefix(out, "ID") || !strings.Contains(out, "CURRENT STATE") || !strings.Contains(out, "c-gone") {
		t.Fatalf("table template:\n%s", out)
	}
	// A service with no containers prints the header only; several
	// services are listed one after the other, as docker does.
	if out := e.mustRun(t, "", "service", "ps", "idle"); strings.Count(out, "\n") != 1 {
		t.Fatalf("idle:\n%s", out)
	}
	if out := e.mustRun(t, "", "service", "ps", "-q", "idle", "web"); strings.Count(out, "\n") != 3 {
		t.Fatalf("two services:\n%s", out)
	}
	if _, err := e.run(t, "", "service", "ps", "nope"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("unknown service: %v", err)
	}
}

// A stack redeploy keeps the live-update signals an operator gave: by the
// file a reference fills, so a rotation (a new secret, the same target)
// keeps signalling the process that reads it.
func TestStackRedeployKeepsSignals(t *testing.T) {
	ref := func(secret, target, signal string) *types.SecretReference {
		return &types.SecretReference{SecretName: secret, Target: &types.FileTarget{Name: target}, Signal: signal}
	}
	cur := []*types.SecretReference{ref("wp_cert_v1", "cert.pem", "HUP"), ref("wp_key", "", "USR1"), ref("wp_db", "db", "")}
	want := []*types.SecretReference{ref("wp_cert_v2", "cert.pem", ""), ref("wp_key", "", ""), ref("wp_db", "db", ""), ref("wp_new", "new", "")}
	var got []string
	for _, r := range keepSignals(cur, want) {
		got = append(got, r.SecretName+":"+r.Signal)
	}
	if strings.Join(got, ",") != "wp_cert_v2:HUP,wp_key:USR1,wp_db:,wp_new:" {
		t.Fatalf("keepSignals = %q", got)
	}
	if want[0].Signal != "" {
		t.Fatal("keepSignals changed the file's references in place")
	}
}

// service ps's cells as docker's task formatter makes them
// (docker/cli cli/command/task/formatter.go):
//
//	return fmt.Sprintf("%s %s ago", formatter.PrettyPrint(c.task.Status.State),
//		strings.ToLower(units.HumanDuration(time.Since(c.task.Status.Timestamp))))
//	...
//	if c.trunc { taskErr = formatter.Ellipsis(taskErr, maxErrLength) }   // maxErrLength = 30
//	if len(taskErr) > 0 { taskErr = fmt.Sprintf(`"%s"`, taskErr) }
func TestServicePsCellsAsDocker(t *testing.T) {
	for _, tc := range []struct {
		err     string
		noTrunc bool
		want    string
	}{
		{"", false, ""},
		{"short", false, `"short"`},
		{strings.Repeat("x", 30), false, `"` + strings.Repeat("x", 30) + `"`},
		{strings.Repeat("x", 31), false, `"` + strings.Repeat("x", 29) + `…"`},
		{strings.Repeat("x", 31), true, `"` + strings.Repeat("x", 31) + `"`},
		{strings.Repeat("é", 31), false, `"` + strings.Repeat("é", 29) + `…"`},
	} {
		if got := psError(tc.err, tc.noTrunc); got != tc.want {
			t.Errorf("psError(%q, %v) = %q, want %q", tc.err, tc.noTrunc, got, tc.want)
		}
	}
	now := time.Now()
	for state, want := range map[string]string{"mounted": "Mounted about an hour ago", "update-failed": "Update failed about an hour ago"} {
		c := &adminapi.ServiceContainer{ContainerId: "c", State: state, UpdatedAt: timestamppb.New(now.Add(-time.Hour))}
		if got := psRowOf("web", c, now, false).CurrentState; got != want {
			t.Errorf("CurrentState of %s = %q, want %q", state, got, want)
		}
	}
}

// The pages state the table's bound per node as the store has it.
func TestDocsStateContainerCap(t *testing.T) {
	for _, page := range []string{"../../docs/cli.md", "../../docs/operations.md", "../../docs/metrics.md"} {
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), strconv.Itoa(store.MaxContainersPerNode)+" ") {
			t.Errorf("%s does not state store.MaxContainersPerNode (%d)", page, store.MaxContainersPerNode)
		}
	}
}
