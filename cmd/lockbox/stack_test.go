package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lockbox-project/lockbox/api/types"
)

// The stack verbs against a real admin service (etcd, keys, store), with
// the compose files of cmd/lockbox/testdata/compose: Docker's own
// WordPress example, and long-syntax references.

// composeDir copies testdata/compose/NAME into a temporary directory, so
// that a test may change the secrets' files.
func composeDir(t *testing.T, name string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), name)
	if err := os.CopyFS(dst, os.DirFS(filepath.Join("testdata", "compose", name))); err != nil {
		t.Fatal(err)
	}
	return dst
}

func (e *cliEnv) secret(t *testing.T, name string) (*types.Secret, []byte) {
	t.Helper()
	ctx := context.Background()
	s, err := e.store.GetSecret(ctx, name)
	if err != nil {
		t.Fatalf("secret %s: %v", name, err)
	}
	data, err := e.store.SecretData(ctx, s.Id)
	if err != nil {
		t.Fatal(err)
	}
	return s, data
}

func (e *cliEnv) service(t *testing.T, name string) *types.Service {
	t.Helper()
	s, err := e.store.GetService(context.Background(), name)
	if err != nil {
		t.Fatalf("service %s: %v", name, err)
	}
	return s
}

func (e *cliEnv) secretNames(t *testing.T) []string {
	t.Helper()
	all, err := e.store.ListSecrets(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range all {
		names = append(names, s.Spec.Name)
	}
	slices.Sort(names)
	return names
}

// refString is a reference as "SECRET>TARGET uid:gid mode".
func refString(r *types.SecretReference) string {
	t := r.GetTarget()
	return r.SecretName + ">" + t.GetName() + " " + t.GetUid() + ":" + t.GetGid() + " " + "0" + strings.TrimLeft(itoaOctal(t.GetMode()), "0")
}

func itoaOctal(m uint32) string {
	const digits = "01234567"
	if m == 0 {
		return "0"
	}
	var b []byte
	for ; m > 0; m /= 8 {
		b = append([]byte{digits[m%8]}, b...)
	}
	return string(b)
}

func refStrings(s *types.Service) []string {
	var out []string
	for _, r := range s.Spec.Secrets {
		out = append(out, refString(r))
	}
	return out
}

func TestStackDeployWordPress(t *testing.T) {
	e := newCLIEnv(t, "")
	dir := composeDir(t, "wordpress")
	file := filepath.Join(dir, "compose.yaml")

	out := e.mustRun(t, "", "stack", "deploy", "-c", file, "wp")
	for _, want := range []string{"Creating secret wp_db_password\n", "Creating secret wp_db_root_password\n",
		"Creating service wp_db\n", "Creating service wp_wordpress\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("deploy output lacks %q:\n%s", want, out)
		}
	}
	// Secrets are named and labelled as docker stack deploy names them.
	pw, data := e.secret(t, "wp_db_password")
	if string(data) != "wp-db-password-1\n" || pw.Spec.Labels[stackLabel] != "wp" {
		t.Fatalf("wp_db_password: %q labels %v", data, pw.Spec.Labels)
	}
	if _, data := e.secret(t, "wp_db_root_password"); string(data) != "wp-root-password-1\n" {
		t.Fatalf("wp_db_root_password: %q", data)
	}
	// The target is the compose key, so MYSQL_PASSWORD_FILE=/run/secrets/db_password
	// finds its file whatever the stack is called; references sorted by secret name.
	db := e.service(t, "wp_db")
	if got := strings.Join(refStrings(db), ", "); got != "wp_db_password>db_password : 0, wp_db_root_password>db_root_password : 0" {
		t.Fatalf("wp_db references: %s", got)
	}
	if db.Spec.Labels[stackLabel] != "wp" || db.Spec.GetPlacement().GetConstraints() != nil {
		t.Fatalf("wp_db: %v", db.Spec)
	}
	if got := strings.Join(refStrings(e.service(t, "wp_wordpress")), ", "); got != "wp_db_password>db_password : 0" {
		t.Fatalf("wp_wordpress references: %s", got)
	}
	insp := e.mustRun(t, "", "service", "inspect", "--format", "{{range .Spec.Secrets}}{{.File.Name}} {{end}}", "wp_db")
	if insp != "db_password db_root_password \n" {
		t.Fatalf("inspect targets: %q", insp)
	}

	// docker stack ls: NAME and SERVICES.
	if out := e.mustRun(t, "", "stack", "ls"); out != "NAME      SERVICES\nwp        2\n" {
		t.Fatalf("stack ls:\n%q", out)
	}

	// Redeploying the same file changes nothing.
	before := e.service(t, "wp_db").Meta.Version
	out = e.mustRun(t, "", "stack", "deploy", "-c", file, "wp")
	if strings.Contains(out, "Creating") || !strings.Contains(out, "Updating service wp_db (id: "+db.Id+")\n") {
		t.Fatalf("redeploy output:\n%s", out)
	}
	if after := e.service(t, "wp_db").Meta.Version; after != before {
		t.Fatalf("an unchanged redeploy wrote the service: version %d -> %d", before, after)
	}

	// A secret's data is immutable, as in swarm: a changed file is refused
	// with the secret's name, whether its size changed or not (the second
	// case is told apart by the manager's keyed digest).
	for _, content := range []string{"a-longer-new-password\n", "wp-db-password-2\n"} {
		writeFile(t, filepath.Join(dir, "db_password.txt"), content)
		_, err := e.run(t, "", "stack", "deploy", "-c", file, "wp")
		if err == nil || !strings.Contains(err.Error(), "failed to update secret wp_db_password: only updates to Labels are allowed") ||
			!strings.Contains(err.Error(), "db_password.txt") {
			t.Fatalf("changed secret: %v", err)
		}
		if strings.Contains(err.Error(), strings.TrimSpace(content)) {
			t.Fatal("the error shows the secret")
		}
		if _, data := e.secret(t, "wp_db_password"); string(data) != "wp-db-password-1\n" {
			t.Fatalf("the stored secret changed: %q", data)
		}
	}
	// The comparison copy is gone.
	if names := strings.Join(e.secretNames(t), " "); names != "wp_db_password wp_db_root_password" {
		t.Fatalf("secrets after the refused redeploys: %s", names)
	}

	out = e.mustRun(t, "", "stack", "rm", "wp")
	if out != "Removing service wp_db\nRemoving service wp_wordpress\nRemoving secret wp_db_password\nRemoving secret wp_db_root_password\n" {
		t.Fatalf("stack rm:\n%s", out)
	}
	if names := e.secretNames(t); len(names) != 0 {
		t.Fatalf("secrets left: %v", names)
	}
	if out := e.mustRun(t, "", "stack", "rm", "wp"); out != "Nothing found in stack: wp\n" {
		t.Fatalf("second rm: %q", out)
	}
	if out := e.mustRun(t, "", "stack", "ls"); out != "NAME      SERVICES\n" {
		t.Fatalf("stack ls after rm: %q", out)
	}
}

func TestStackDeployLongSyntax(t *testing.T) {
	e := newCLIEnv(t, "")
	dir := composeDir(t, "long-syntax")
	file := filepath.Join(dir, "compose.yaml")
	t.Setenv("LOCKBOX_TEST_API_TOKEN", "token-from-env")

	// The external secret must exist already.
	_, err := e.run(t, "", "stack", "deploy", "-c", file, "shop")
	if err == nil || !strings.Contains(err.Error(), `secret "site_db" is declared external, but secret 'shared_site_db' was not found`) {
		t.Fatalf("missing external: %v", err)
	}
	if names := e.secretNames(t); len(names) != 0 {
		t.Fatalf("a refused deploy created %v", names)
	}
	e.mustRun(t, "dbpass", "secret", "create", "shared_site_db", "-")

	e.mustRun(t, "", "stack", "deploy", "-c", file, "shop")
	web := e.service(t, "shop_web")
	want := []string{
		"shared_site_db>site_db 33: 0640",
		"shop_api_token>api_token : 0440",
		"shop_tls_cert>cert.pem : 0444",
		"shop_tls_key>/etc/nginx/tls/key.pem 101:101 0400",
	}
	if got := strings.Join(refStrings(web), ", "); got != strings.Join(want, ", ") {
		t.Fatalf("shop_web references:\n got %s\nwant %s", got, strings.Join(want, ", "))
	}
	if got := strings.Join(web.Spec.GetPlacement().GetConstraints(), " "); got != "node.labels.zone==east node.role==worker" {
		t.Fatalf("constraints: %s", got)
	}
	if web.Spec.Labels["tier"] != "front" || web.Spec.Labels[stackLabel] != "shop" {
		t.Fatalf("labels: %v", web.Spec.Labels)
	}
	if _, data := e.secret(t, "shop_api_token"); string(data) != "token-from-env" {
		t.Fatalf("environment secret: %q", data)
	}
	cert, _ := e.secret(t, "shop_tls_cert")
	if cert.Spec.Labels["kind"] != "certificate" || cert.Spec.Labels[stackLabel] != "shop" {
		t.Fatalf("cert labels: %v", cert.Spec.Labels)
	}
	ext, _ := e.secret(t, "shared_site_db")
	if _, ok := ext.Spec.Labels[stackLabel]; ok {
		t.Fatal("the external secret was labelled as the stack's")
	}

	e.mustRun(t, "", "stack", "rm", "shop")
	// External secrets are never removed.
	if names := strings.Join(e.secretNames(t), " "); names != "shared_site_db" {
		t.Fatalf("after rm: %s", names)
	}
}

func TestStackRedeploy(t *testing.T) {
	e := newCLIEnv(t, "")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.txt"), "secret-a")
	writeFile(t, filepath.Join(dir, "b.txt"), "secret-b")
	file := filepath.Join(dir, "compose.yaml")
	writeFile(t, file, `
services:
  app:
    image: x
    secrets: [a]
  old:
    image: x
    secrets: [a]
secrets:
  a: {file: a.txt}
`)
	// A secret of the stack's name that holds the same data is taken over
	// (labelled), as docker's update does; one of another stack is not.
	e.mustRun(t, "secret-a", "secret", "create", "s_a", "-")
	e.mustRun(t, "secret-b", "secret", "create", "--label", stackLabel+"=other", "s_b", "-")
	out := e.mustRun(t, "", "stack", "deploy", "-c", file, "s")
	if strings.Contains(out, "Creating secret") {
		t.Fatalf("deploy created a secret that exists:\n%s", out)
	}
	if a, _ := e.secret(t, "s_a"); a.Spec.Labels[stackLabel] != "s" {
		t.Fatalf("s_a labels: %v", a.Spec.Labels)
	}
	// An operator's claim rule survives a redeploy: compose has none, and
	// dropping it would widen who may claim the service.
	e.mustRun(t, "", "service", "update", "s_app", "--claim-add", "containerd.namespace==prod")

	writeFile(t, file, `
services:
  app:
    image: x
    secrets:
      - a
      - source: b
        target: /etc/app/b
        mode: 0400
secrets:
  a: {file: a.txt}
  b: {file: b.txt}
`)
	if _, err := e.run(t, "", "stack", "deploy", "--prune", "-c", file, "s"); err == nil || err.Error() != "failed to update secret s_b: it belongs to stack other; give this stack's secret another name (name: in the compose file)" {
		t.Fatalf("secret of another stack: %v", err)
	}
	e.mustRun(t, "", "secret", "rm", "s_b")
	out = e.mustRun(t, "", "stack", "deploy", "--prune", "-c", file, "s")
	for _, want := range []string{"Creating secret s_b\n", "Removing service s_old\n", "Updating service s_app (id: "} {
		if !strings.Contains(out, want) {
			t.Errorf("redeploy output lacks %q:\n%s", want, out)
		}
	}
	app := e.service(t, "s_app")
	if got := strings.Join(refStrings(app), ", "); got != "s_a>a : 0, s_b>/etc/app/b : 0400" {
		t.Fatalf("s_app references after redeploy: %s", got)
	}
	if strings.Join(app.Spec.ClaimRules, " ") != "containerd.namespace==prod" {
		t.Fatalf("claim rules after redeploy: %v", app.Spec.ClaimRules)
	}
	if out := e.mustRun(t, "", "stack", "ls"); !strings.Contains(out, "s         1\n") {
		t.Fatalf("stack ls after prune:\n%s", out)
	}

	// A refused deploy changes nothing: the new secret s_a0 is not created
	// though it sorts before s_b, whose data changed (docker's deploy
	// stops half-way, after creating what came first).
	writeFile(t, filepath.Join(dir, "b.txt"), "secret-B")
	writeFile(t, filepath.Join(dir, "a0.txt"), "secret-a0")
	writeFile(t, file, "services:\n  app:\n    image: x\n    secrets: [a, a0, b]\nsecrets:\n  a: {file: a.txt}\n  a0: {file: a0.txt}\n  b: {file: b.txt}\n")
	if _, err := e.run(t, "", "stack", "deploy", "-c", file, "s"); err == nil || !strings.Contains(err.Error(), "failed to update secret s_b") {
		t.Fatalf("changed b: %v", err)
	}
	if names := strings.Join(e.secretNames(t), " "); names != "s_a s_b" {
		t.Fatalf("secrets after a refused deploy: %s", names)
	}
	if got := strings.Join(refStrings(e.service(t, "s_app")), ", "); got != "s_a>a : 0, s_b>/etc/app/b : 0400" {
		t.Fatalf("s_app after a refused deploy: %s", got)
	}

	// Without --prune, docker keeps services the file no longer names.
	writeFile(t, file, "services:\n  other:\n    image: x\n")
	e.mustRun(t, "", "stack", "deploy", "-c", file, "s")
	if out := e.mustRun(t, "", "stack", "ls", "--format", "{{.Name}}:{{.Services}}"); out != "s:2\n" {
		t.Fatalf("stack ls: %q", out)
	}
}

// A stack secret that a service outside the stack references is kept by
// stack rm: the manager refuses to remove a secret in use, the refusal is
// printed and the exit status is non-zero, as with docker; the stack's
// services are removed all the same.
func TestStackRmSecretInUse(t *testing.T) {
	e := newCLIEnv(t, "")
	file := filepath.Join(composeDir(t, "wordpress"), "compose.yaml")
	e.mustRun(t, "", "stack", "deploy", "-c", file, "wp")
	e.mustRun(t, "", "service", "create", "backup", "--secret", "wp_db_root_password")

	out, err := e.run(t, "", "stack", "rm", "wp")
	if err == nil || err.Error() != "failed to remove some resources from stack: wp" {
		t.Fatalf("rm: %v", err)
	}
	if !strings.Contains(out, "Removing secret wp_db_root_password\nFailed to remove secret ") ||
		!strings.Contains(out, ": secret 'wp_db_root_password' is in use by the following service: backup\n") {
		t.Fatalf("rm output:\n%s", out)
	}
	if names := strings.Join(e.secretNames(t), " "); names != "wp_db_root_password" {
		t.Fatalf("secrets after rm: %s", names)
	}
	if _, err := e.store.GetService(context.Background(), "wp_db"); err == nil {
		t.Fatal("wp_db survived stack rm")
	}
	// Once the other service lets go, stack rm finishes the job.
	e.mustRun(t, "", "service", "rm", "backup")
	if out := e.mustRun(t, "", "stack", "rm", "wp"); out != "Removing secret wp_db_root_password\n" {
		t.Fatalf("second rm: %q", out)
	}
}

func TestStackLs(t *testing.T) {
	e := newCLIEnv(t, "")
	dir := t.TempDir()
	file := filepath.Join(dir, "compose.yaml")
	writeFile(t, file, "services:\n  a:\n    image: x\n  b:\n    image: x\n")
	for _, s := range []string{"10-foo", "2-foo", "1-foo"} {
		e.mustRun(t, "", "stack", "deploy", "-c", file, s)
	}
	e.mustRun(t, "", "service", "create", "loose") // no stack label: not a stack
	// docker's golden output shape (cli/command/stack/testdata/stack-list-sort.golden),
	// in natural order.
	if out := e.mustRun(t, "", "stack", "ls"); out != "NAME      SERVICES\n1-foo     2\n2-foo     2\n10-foo    2\n" {
		t.Fatalf("stack ls:\n%s", out)
	}
	if out := e.mustRun(t, "", "stack", "ls", "--format", "json"); !strings.HasPrefix(out, `{"Name":"1-foo","Services":"2"}`+"\n") {
		t.Fatalf("stack ls --format json:\n%s", out)
	}
	// docker's --format: "table TEMPLATE" has a header; \t is a tab.
	if out := e.mustRun(t, "", "stack", "ls", "--format", "table {{.Name}}"); out != "NAME\n1-foo\n2-foo\n10-foo\n" {
		t.Fatalf("stack ls --format 'table {{.Name}}':\n%q", out)
	}
	if out := e.mustRun(t, "", "stack", "ls", "--format", `{{.Name}}\t{{.Services}}`); out != "1-foo\t2\n2-foo\t2\n10-foo\t2\n" {
		t.Fatalf("stack ls --format with \\t:\n%q", out)
	}
	if _, err := e.run(t, "", "stack", "ls", "--format", "{{.Nope"); err == nil || !strings.Contains(err.Error(), "--format") {
		t.Fatalf("bad template: %v", err)
	}
	if out := e.mustRun(t, "", "stack", "rm", "1-foo", "2-foo"); strings.Count(out, "Removing service") != 4 {
		t.Fatalf("rm of two stacks:\n%s", out)
	}
}

// Refused files leave the cluster untouched, and each error names what
// Lockbox cannot honour.
func TestStackDeployRefused(t *testing.T) {
	e := newCLIEnv(t, "")
	tests := []struct {
		name, compose, want string
	}{
		{"driver", "secrets:\n  s:\n    driver: vault\n", `secrets.s.driver: "vault": Lockbox has no secret drivers (yet)`},
		{"driver_opts", "secrets:\n  s:\n    file: a.txt\n    driver_opts: {k: v}\n", "secrets.s.driver_opts: Lockbox has no secret drivers"},
		{"template_driver", "secrets:\n  s:\n    file: a.txt\n    template_driver: golang\n", `secrets.s.template_driver: "golang": Lockbox does not template secrets`},
		{"no source", "secrets:\n  s:\n    labels: {a: b}\n", "secrets.s: one of file|environment must be set"},
		{"unset environment", "secrets:\n  s:\n    environment: LOCKBOX_TEST_UNSET_VARIABLE\n", "secrets.s: environment variable LOCKBOX_TEST_UNSET_VARIABLE is not set"},
		{"missing file", "secrets:\n  s:\n    file: nope.txt\n", "nope.txt: no such file or directory"},
		{"empty file", "secrets:\n  s:\n    file: empty.txt\n", "empty.txt is empty: a secret holds 1 to 511999 bytes"},
		{"huge file", "secrets:\n  s:\n    file: huge.txt\n", "huge.txt holds 512000 bytes or more"},
		{"bad name", "secrets:\n  s:\n    name: bad/name\n    file: a.txt\n", `secrets.s: the secret's name "bad/name" is invalid`},
		{"engine label", "services:\n  web:\n    image: x\n    deploy:\n      placement:\n        constraints: [engine.labels.os==linux]\n",
			`service "web": deploy.placement.constraints: invalid constraint "engine.labels.os==linux": unknown key "engine.labels.os"`},
		{"ambiguous mode", "services:\n  web:\n    image: x\n    secrets:\n      - source: s\n        mode: 440\nsecrets:\n  s:\n    file: a.txt\n",
			`line 6: service "web": secret "s": mode 440 is ambiguous: YAML (and so docker stack deploy) reads it as the decimal number 440, which is mode 0670, while it looks like octal 0440: write 0440 (or 0o440) for mode 0440, or 0670 for mode 0670`},
		{"mode 0", "services:\n  web:\n    image: x\n    secrets:\n      - source: s\n        mode: 0\nsecrets:\n  s:\n    file: a.txt\n", `service "web": secret "s": mode 0 would make the file unreadable`},
		{"setuid mode", "services:\n  web:\n    image: x\n    secrets:\n      - source: s\n        mode: 04755\nsecrets:\n  s:\n    file: a.txt\n", "mode 04755 holds more than permission bits"},
		{"undefined secret", "services:\n  web:\n    image: x\n    secrets: [nope]\n", `undefined secret nope`},
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.txt"), "data")
	writeFile(t, filepath.Join(dir, "empty.txt"), "")
	writeFile(t, filepath.Join(dir, "huge.txt"), strings.Repeat("x", 512000))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(dir, "compose.yaml")
			writeFile(t, file, tc.compose)
			_, err := e.run(t, "", "stack", "deploy", "-c", file, "st")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant %q", err, tc.want)
			}
			if names := e.secretNames(t); len(names) != 0 {
				t.Fatalf("a refused deploy created %v", names)
			}
		})
	}

	for _, args := range [][]string{
		{"stack", "deploy", "-c", filepath.Join(dir, "compose.yaml"), "bad/stack"},
		{"stack", "deploy", "st"},
		{"stack", "deploy", "--with-registry-auth", "-c", filepath.Join(dir, "compose.yaml"), "st"},
	} {
		if _, err := e.run(t, "", args...); err == nil {
			t.Errorf("lockbox %s: no error", strings.Join(args, " "))
		}
	}
}

// Configs are not Lockbox's: the deploy warns and goes on, since nerdctl
// compose mounts them from host files when it runs the same file.
func TestStackDeployConfigsWarn(t *testing.T) {
	e := newCLIEnv(t, "")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.txt"), "data")
	writeFile(t, filepath.Join(dir, "nginx.conf"), "server {}")
	file := filepath.Join(dir, "compose.yaml")
	writeFile(t, file, "version: '3.8'\nservices:\n  web:\n    image: x\n    configs: [conf]\n    secrets: [s]\nconfigs:\n  conf:\n    file: nginx.conf\nsecrets:\n  s:\n    file: a.txt\n")
	out := e.mustRun(t, "", "stack", "deploy", "-c", file, "st")
	if !strings.Contains(out, "lockbox: warning: configs: ignored: Lockbox keeps secrets only") ||
		!strings.Contains(out, "the attribute `version` is obsolete") || !strings.Contains(out, "Creating service st_web\n") {
		t.Fatalf("deploy output:\n%s", out)
	}
}

// "-c -" reads the file from standard input; paths are then relative to
// the current directory, as docker's are.
func TestStackDeployStdin(t *testing.T) {
	e := newCLIEnv(t, "")
	dir := composeDir(t, "wordpress")
	t.Chdir(dir)
	compose, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e.mustRun(t, string(compose), "stack", "deploy", "-c", "-", "wp")
	if _, data := e.secret(t, "wp_db_root_password"); string(data) != "wp-root-password-1\n" {
		t.Fatalf("secret from stdin file: %q", data)
	}
}
