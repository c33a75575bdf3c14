package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/internal/testutil/managertest"
)

// ctxEnv is a config directory of its own (LOCKBOX_CONFIG) and none of
// the connection variables, so the runner's own ~/.lockbox and
// environment do not leak into a test.
func ctxEnv(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "cfg")
	t.Setenv(configEnv, dir)
	t.Setenv(hostEnv, "")
	t.Setenv(contextEnv, "")
	return dir
}

// lockbox runs the CLI with exactly args (no -H added): stdout, stderr and
// the error.
func lockbox(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	root := newRootCommand()
	var out, errw bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errw)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), errw.String(), err
}

func mustLockbox(t *testing.T, args ...string) string {
	t.Helper()
	out, errw, err := lockbox(t, "", args...)
	if err != nil {
		t.Fatalf("lockbox %s: %v\n%s%s", strings.Join(args, " "), err, out, errw)
	}
	return out
}

// tlsFiles writes a CA, an admin certificate and its key as
// admin-credentials create does, and returns the directory.
func tlsFiles(t *testing.T) string {
	t.Helper()
	ca := newTestCA(t, "lockbox test CA")
	cert, key := ca.issue(t, "admin", x509.ExtKeyUsageClientAuth)
	dir := filepath.Join(t.TempDir(), "admin")
	if err := writeAdminCredentials(dir, &adminapi.IssueAdminCredentialsResponse{RootCaPem: ca.pem, CertificatePem: cert, KeyPem: key}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mode(t *testing.T, p string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// create, ls, use, show, inspect and rm, as docker context does them.
func TestContextVerbs(t *testing.T) {
	cfg := ctxEnv(t)
	tlsDir := tlsFiles(t)

	if out := mustLockbox(t, "context", "show"); out != "default\n" {
		t.Fatalf("show with nothing stored: %q", out)
	}
	out, errw, err := lockbox(t, "", "context", "create", "local", "-H", "unix:///tmp/x.sock", "--description", "this node")
	if err != nil || out != "local\n" || errw != "Successfully created context \"local\"\n" {
		t.Fatalf("create local: %q %q %v", out, errw, err)
	}
	mustLockbox(t, "context", "create", "prod", "--host", "tcp://mgr1:4242", "--tls-dir", tlsDir)

	ls := func() []string {
		t.Helper()
		var rows []string
		for _, l := range strings.Split(strings.TrimSpace(mustLockbox(t, "context", "ls")), "\n") {
			rows = append(rows, strings.Join(strings.Fields(l), " "))
		}
		return rows
	}
	want := []string{"NAME DESCRIPTION HOST", "default * Current LOCKBOX_HOST based configuration " + defaultHost, "local this node unix:///tmp/x.sock", "prod tcp://mgr1:4242"}
	if got := ls(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("ls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	out, errw, err = lockbox(t, "", "context", "use", "prod")
	if err != nil || out != "prod\n" || errw != "Current context is now \"prod\"\n" {
		t.Fatalf("use prod: %q %q %v", out, errw, err)
	}
	if got := ls(); got[1] != "default Current LOCKBOX_HOST based configuration "+defaultHost || got[3] != "prod * tcp://mgr1:4242" {
		t.Fatalf("ls after use:\n%s", strings.Join(got, "\n"))
	}
	if out := mustLockbox(t, "context", "show"); out != "prod\n" {
		t.Fatalf("show: %q", out)
	}
	if out := mustLockbox(t, "context", "ls", "-q"); out != "default\nlocal\nprod\n" {
		t.Fatalf("ls -q: %q", out)
	}
	if out := mustLockbox(t, "context", "ls", "--format", "{{.Name}} {{.Current}}"); out != "default false\nlocal false\nprod true\n" {
		t.Fatalf("ls --format: %q", out)
	}

	// inspect with no argument is the current context; TLS files by
	// absolute path, never their content.
	out = mustLockbox(t, "context", "inspect")
	var views []contextView
	if err := json.Unmarshal([]byte(out), &views); err != nil || len(views) != 1 {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	v := views[0]
	if v.Name != "prod" || v.Host != "tcp://mgr1:4242" || v.TLS == nil || v.TLS.Key != filepath.Join(tlsDir, "key.pem") || v.TLS.CA != filepath.Join(tlsDir, "ca.pem") ||
		v.Storage.MetadataPath != filepath.Join(cfg, "contexts", "prod", "meta.json") {
		t.Fatalf("inspect: %+v", v)
	}
	key, _ := os.ReadFile(filepath.Join(tlsDir, "key.pem"))
	for _, f := range []string{out, mustLockbox(t, "context", "inspect", "--format", "json", "prod", "default")} {
		if strings.Contains(f, "PRIVATE KEY") || strings.Contains(f, string(key[40:80])) {
			t.Fatalf("inspect shows key material:\n%s", f)
		}
	}
	if out := mustLockbox(t, "context", "inspect", "-f", "{{.Host}}", "local", "default"); out != "unix:///tmp/x.sock\n"+defaultHost+"\n" {
		t.Fatalf("inspect -f: %q", out)
	}

	// Everything is private; nothing was copied next to the context.
	for p, m := range map[string]os.FileMode{
		filepath.Join(cfg, "contexts"):                      0o700,
		filepath.Join(cfg, "contexts", "prod"):              0o700,
		filepath.Join(cfg, "contexts", "prod", "meta.json"): 0o600,
		filepath.Join(cfg, "config.json"):                   0o600,
	} {
		if got := mode(t, p); got != m {
			t.Errorf("%s: mode %v, want %v", p, got, m)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(cfg, "contexts", "prod")); len(ents) != 1 {
		t.Errorf("context directory holds %d files, want meta.json only", len(ents))
	}

	// rm: the current context only with -f; default never.
	if _, _, err := lockbox(t, "", "context", "rm", "prod"); err == nil || err.Error() != `context "prod" is in use, set -f flag to force remove` {
		t.Fatalf("rm current: %v", err)
	}
	if _, _, err := lockbox(t, "", "context", "rm", "default"); err == nil || !strings.Contains(err.Error(), `context "default" cannot be removed`) {
		t.Fatalf("rm default: %v", err)
	}
	if out := mustLockbox(t, "context", "rm", "local"); out != "local\n" {
		t.Fatalf("rm local: %q", out)
	}
	if out := mustLockbox(t, "context", "rm", "-f", "prod"); out != "prod\n" {
		t.Fatalf("rm -f prod: %q", out)
	}
	if out := mustLockbox(t, "context", "show"); out != "default\n" {
		t.Fatalf("show after rm -f of the current context: %q", out)
	}
	if out := mustLockbox(t, "context", "ls", "-q"); out != "default\n" {
		t.Fatalf("ls after rm: %q", out)
	}
	if _, err := os.Stat(filepath.Join(tlsDir, "key.pem")); err != nil {
		t.Fatalf("rm removed the TLS files it referenced: %v", err)
	}
	// use default writes no currentContext.
	mustLockbox(t, "context", "create", "again", "-H", "unix:///tmp/y.sock")
	mustLockbox(t, "context", "use", "again")
	mustLockbox(t, "context", "use", "default")
	if b, err := os.ReadFile(filepath.Join(cfg, "config.json")); err != nil || strings.Contains(string(b), "currentContext") {
		t.Fatalf("config after use default: %s %v", b, err)
	}
}

// update replaces what its flags give and checks the result as create
// does; a group-readable key is warned about at create and update.
func TestContextUpdate(t *testing.T) {
	ctxEnv(t)
	first, second := tlsFiles(t), tlsFiles(t)
	mustLockbox(t, "context", "create", "prod", "-H", "tcp://mgr1:4242", "--tls-dir", first, "--description", "old")
	inspect := func() contextView {
		t.Helper()
		var v []contextView
		if err := json.Unmarshal([]byte(mustLockbox(t, "context", "inspect", "prod")), &v); err != nil || len(v) != 1 {
			t.Fatalf("inspect: %v", err)
		}
		return v[0]
	}
	for _, tc := range []struct {
		name    string
		args    []string
		check   func(v contextView) bool
		wantErr string
	}{
		{name: "description only", args: []string{"--description", "new"}, check: func(v contextView) bool {
			return v.Description == "new" && v.Host == "tcp://mgr1:4242" && v.TLS != nil && v.TLS.Key == filepath.Join(first, "key.pem")
		}},
		{name: "new TLS files", args: []string{"--tls-dir", second}, check: func(v contextView) bool {
			return v.Description == "new" && v.TLS != nil && v.TLS.CA == filepath.Join(second, "ca.pem")
		}},
		{name: "new tcp host keeps the files", args: []string{"-H", "tcp://mgr2:4242"}, check: func(v contextView) bool {
			return v.Host == "tcp://mgr2:4242" && v.TLS != nil && v.TLS.Cert == filepath.Join(second, "cert.pem")
		}},
		{name: "unix host drops them", args: []string{"-H", "unix:///run/x.sock"}, check: func(v contextView) bool {
			return v.Host == "unix:///run/x.sock" && v.TLS == nil
		}},
		{name: "tcp again needs files", args: []string{"-H", "tcp://mgr1:4242"}, wantErr: "a tcp:// context needs --tls-dir"},
		{name: "bad host", args: []string{"-H", "tcp://mgr1"}, wantErr: "missing port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := lockbox(t, "", append([]string{"context", "update", "prod"}, tc.args...)...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if v := inspect(); !tc.check(v) {
				t.Fatalf("after update: %+v %+v", v, v.TLS)
			}
		})
	}
	for args, want := range map[string]string{"default": `context "default" cannot be updated`, "nope": `context "nope" does not exist`} {
		if _, _, err := lockbox(t, "", "context", "update", args, "--description", "x"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("update %s: %v", args, err)
		}
	}

	open := tlsFiles(t)
	if err := os.Chmod(filepath.Join(open, "key.pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errw, err := lockbox(t, "", "context", "create", "open", "-H", "tcp://mgr1:4242", "--tls-dir", open)
	if err != nil || !strings.Contains(errw, "Warning: "+filepath.Join(open, "key.pem")+" can be read by other users (mode 0644)") {
		t.Fatalf("create with a 0644 key: %v %q", err, errw)
	}

	// --context completes with the stored names.
	if out := mustLockbox(t, "__complete", "--context", ""); !strings.HasPrefix(out, "default\nopen\nprod\n") {
		t.Fatalf("completion: %q", out)
	}
}

// chooseContext is docker's precedence: --context > -H > LOCKBOX_HOST >
// LOCKBOX_CONTEXT > config file > default.
func TestChooseContext(t *testing.T) {
	cfg := t.TempDir()
	withCurrent := t.TempDir()
	if err := (&contextStore{dir: withCurrent}).setCurrent("fromconfig"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		flag     string
		hostFlag bool
		env      map[string]string
		want     string
		wantErr  string
	}{
		{name: "nothing", want: "default"},
		{name: "config", env: map[string]string{configEnv: withCurrent}, want: "fromconfig"},
		{name: "LOCKBOX_CONTEXT over config", env: map[string]string{configEnv: withCurrent, contextEnv: "fromenv"}, want: "fromenv"},
		{name: "LOCKBOX_HOST over LOCKBOX_CONTEXT", env: map[string]string{configEnv: withCurrent, contextEnv: "fromenv", hostEnv: "unix:///x"}, want: "default"},
		{name: "-H over LOCKBOX_CONTEXT", hostFlag: true, env: map[string]string{configEnv: withCurrent, contextEnv: "fromenv"}, want: "default"},
		{name: "--context over everything", flag: "fromflag", env: map[string]string{configEnv: withCurrent, contextEnv: "fromenv", hostEnv: "unix:///x"}, want: "fromflag"},
		{name: "--context and -H", flag: "fromflag", hostFlag: true, wantErr: "conflicting options: either specify --host or --context, not both"},
		{name: "broken config", env: map[string]string{configEnv: cfg}, wantErr: "loading config file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "broken config" {
				writeFile(t, filepath.Join(cfg, "config.json"), "{not json")
			}
			env := map[string]string{configEnv: t.TempDir()}
			for k, v := range tc.env {
				env[k] = v
			}
			got, err := chooseContext(tc.flag, tc.hostFlag, func(k string) string { return env[k] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got.name != tc.want {
				t.Fatalf("got %q %v, want %q", got.name, err, tc.want)
			}
		})
	}
}

// The same precedence end to end: two managers, each with one secret, and
// the secret ls output says which one answered.
func TestContextPrecedenceAgainstManagers(t *testing.T) {
	cfg := ctxEnv(t)
	a, b := newCLIEnv(t, ""), newCLIEnv(t, "")
	for _, e := range []struct {
		env    *cliEnv
		secret string
	}{{a, "in-a"}, {b, "in-b"}} {
		if _, _, err := lockbox(t, "data", "-H", e.env.host, "secret", "create", e.secret, "-"); err != nil {
			t.Fatal(err)
		}
	}
	mustLockbox(t, "context", "create", "ma", "-H", a.host)
	mustLockbox(t, "context", "create", "mb", "-H", b.host)
	mustLockbox(t, "context", "use", "ma")

	ls := []string{"secret", "ls", "--format", "{{.Name}}"}
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		want    string
		wantErr string
	}{
		{name: "current context", want: "in-a"},
		{name: "LOCKBOX_CONTEXT over current", env: map[string]string{contextEnv: "mb"}, want: "in-b"},
		{name: "LOCKBOX_HOST over LOCKBOX_CONTEXT", env: map[string]string{contextEnv: "ma", hostEnv: b.host}, want: "in-b"},
		{name: "-H over LOCKBOX_HOST", args: []string{"-H", a.host}, env: map[string]string{hostEnv: b.host}, want: "in-a"},
		{name: "--context over LOCKBOX_HOST", args: []string{"--context", "mb"}, env: map[string]string{hostEnv: a.host, contextEnv: "ma"}, want: "in-b"},
		{name: "--context default is LOCKBOX_HOST", args: []string{"--context", "default"}, env: map[string]string{hostEnv: b.host}, want: "in-b"},
		{name: "--context and -H", args: []string{"--context", "mb", "-H", a.host}, wantErr: "conflicting options: either specify --host or --context, not both"},
		{name: "unknown --context", args: []string{"--context", "nope"}, wantErr: `context "nope" does not exist (chosen by --context`},
		{name: "unknown LOCKBOX_CONTEXT", env: map[string]string{contextEnv: "nope"}, wantErr: `context "nope" does not exist (chosen by LOCKBOX_CONTEXT`},
		{name: "TLS flags beside a context", args: []string{"--context", "mb", "--tlscert", "c.pem"}, wantErr: `conflicting options: --tlscert with context "mb"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(configEnv, cfg)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			out, errw, err := lockbox(t, "", append(tc.args, ls...)...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || out != tc.want+"\n" {
				t.Fatalf("got %q %v %s, want %q", out, err, errw, tc.want)
			}
		})
	}

	// The current context vanished from disk: say where it was set.
	if err := os.RemoveAll(filepath.Join(cfg, "contexts", "ma")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := lockbox(t, "", ls...); err == nil || !strings.Contains(err.Error(), `current context "ma" does not exist (set in the config file `+filepath.Join(cfg, "config.json")) {
		t.Fatalf("vanished current context: %v", err)
	}
	// The context verbs still work, so that it can be repaired.
	if out := mustLockbox(t, "context", "use", "default"); out != "default\n" {
		t.Fatalf("use default: %q", out)
	}
}

// The errors of context create and of using a context whose files went.
func TestContextErrors(t *testing.T) {
	ctxEnv(t)
	tlsDir := tlsFiles(t)
	empty := t.TempDir()
	mustLockbox(t, "context", "create", "taken", "-H", "unix:///x.sock")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"reserved name", []string{"default", "-H", "unix:///x"}, `"default" is a reserved context name`},
		{"bad name", []string{"../up", "-H", "unix:///x"}, `context name "../up" is invalid`},
		{"exists", []string{"taken", "-H", "unix:///x"}, `context "taken" already exists`},
		{"no host", []string{"x1"}, "-H/--host is required"},
		{"bad scheme", []string{"x1", "-H", "http://mgr:80"}, `unknown scheme "http"`},
		{"no scheme", []string{"x1", "-H", "mgr:4242"}, "want unix://PATH or tcp://ADDR"},
		{"tcp without port", []string{"x1", "-H", "tcp://mgr"}, "missing port"},
		{"tcp without TLS", []string{"x1", "-H", "tcp://mgr:4242"}, "a tcp:// context needs --tls-dir"},
		{"tcp with part of TLS", []string{"x1", "-H", "tcp://mgr:4242", "--tlscert", "c.pem"}, "a tcp:// context needs --tls-dir"},
		{"unix with TLS", []string{"x1", "-H", "unix:///x", "--tls-dir", tlsDir}, "TLS files are for tcp:// hosts"},
		{"both TLS forms", []string{"x1", "-H", "tcp://mgr:4242", "--tls-dir", tlsDir, "--tlskey", "k.pem"}, "either --tls-dir or --tlscacert"},
		{"missing TLS files", []string{"x1", "-H", "tcp://mgr:4242", "--tls-dir", empty}, "TLS CA certificate: open " + filepath.Join(empty, "ca.pem")},
		{"key of another certificate", []string{"x1", "-H", "tcp://mgr:4242", "--tlscacert", filepath.Join(tlsDir, "ca.pem"), "--tlscert", filepath.Join(tlsDir, "cert.pem"), "--tlskey", filepath.Join(tlsFiles(t), "key.pem")}, "private key does not match public key"},
		{"docker's endpoint option", []string{"x1", "--docker", "host=tcp://mgr:4242,ca=ca.pem"}, "a Lockbox context has one endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := lockbox(t, "", append([]string{"context", "create"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	if out := mustLockbox(t, "context", "ls", "-q"); out != "default\ntaken\n" {
		t.Fatalf("a failed create left a context behind: %q", out)
	}
	for _, args := range [][]string{{"use", "nope"}, {"inspect", "nope"}, {"rm", "nope"}} {
		if _, _, err := lockbox(t, "", append([]string{"context"}, args...)...); err == nil || !strings.Contains(err.Error(), `context "nope" does not exist`) {
			t.Errorf("context %s: %v", strings.Join(args, " "), err)
		}
	}

	// The TLS files went after create: the command says which context.
	gone := tlsFiles(t)
	mustLockbox(t, "context", "create", "gone", "-H", "tcp://127.0.0.1:1", "--tls-dir", gone)
	os.Remove(filepath.Join(gone, "key.pem"))
	if _, _, err := lockbox(t, "", "--context", "gone", "secret", "ls"); err == nil || !strings.Contains(err.Error(), `context "gone": TLS file: stat `+filepath.Join(gone, "key.pem")) {
		t.Fatalf("missing key: %v", err)
	}
}

// A tcp:// context made from 'lockbox admin-credentials create' reaches a
// real manager over mTLS with no -H and no TLS flag on the command line,
// for the verbs that read the flags back too (stack, version).
func TestContextOverTCPToManager(t *testing.T) {
	ctxEnv(t)
	m := managertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := m.Admin().IssueAdminCredentials(ctx, &adminapi.IssueAdminCredentialsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "prod-admin")
	if err := writeAdminCredentials(dir, resp); err != nil {
		t.Fatal(err)
	}
	mustLockbox(t, "context", "create", "prod", "-H", "tcp://"+m.Addr, "--tls-dir", dir)
	mustLockbox(t, "context", "use", "prod")

	if _, errw, err := lockbox(t, "pw", "secret", "create", "over-context", "-"); err != nil {
		t.Fatalf("secret create: %v %s", err, errw)
	}
	if out := mustLockbox(t, "secret", "ls", "--format", "{{.Name}}"); out != "over-context\n" {
		t.Fatalf("secret ls: %q", out)
	}
	if out := mustLockbox(t, "version", "--format", "{{.Server.Os}}"); strings.TrimSpace(out) == "" {
		t.Fatalf("version through the context has no server: %q", out)
	}
	if out := mustLockbox(t, "stack", "ls"); !strings.HasPrefix(out, "NAME") {
		t.Fatalf("stack ls: %q", out)
	}
	// The manager really checks the credentials the context names: a
	// context with another CA's files does not get in.
	mustLockbox(t, "context", "create", "wrong", "-H", "tcp://"+m.Addr, "--tls-dir", tlsFiles(t))
	if _, _, err := lockbox(t, "", "--context", "wrong", "--timeout", "10s", "secret", "ls"); err == nil {
		t.Fatal("a context with another CA's credentials reached the manager")
	}
}
