package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/api/validation"
	"github.com/lockbox-project/lockbox/internal/identity"
	"github.com/lockbox-project/lockbox/manager/admin"
	"github.com/lockbox-project/lockbox/manager/etcd/etcdtest"
	"github.com/lockbox-project/lockbox/manager/keys"
	"github.com/lockbox-project/lockbox/manager/store"
)

// cliEnv is a real Admin service (etcd, keys, store) on a unix socket, and
// a way to run the CLI against it.
type cliEnv struct {
	host  string
	store *store.Store
}

// opts adjust the admin server's configuration (audit_test.go gives it a
// dispatcher's live node status).
func newCLIEnv(t *testing.T, unlockKey string, opts ...func(*admin.Config)) *cliEnv {
	t.Helper()
	ctx := context.Background()
	srv := etcdtest.Start(t)
	cli := srv.Client()
	km := keys.NewManager(store.New(cli, nil).Keyring())
	t.Cleanup(km.Close)
	var kek *keys.KEK
	var err error
	if unlockKey != "" {
		kek, err = keys.KEKFromUnlockKey(unlockKey)
	} else {
		kek, err = keys.NewKEK()
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := km.Bootstrap(ctx, kek, unlockKey); err != nil {
		t.Fatal(err)
	}
	st := store.New(cli, km)
	km2 := admin.KeyManager{Keys: km, Store: st}
	cfg := admin.Config{Store: st, Unlocker: km2, DataKeys: km2, Tokens: fixedTokens{}, AdminCreds: fakeCreds{},
		Managers: func() []string { return []string{"10.0.0.1:4243", "10.0.0.2:4243"} }}
	for _, o := range opts {
		o(&cfg)
	}
	a, err := admin.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "m.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	adminapi.RegisterAdminServer(gs, a)
	go gs.Serve(l)
	t.Cleanup(gs.Stop)
	return &cliEnv{host: "unix://" + sock, store: st}
}

// fakeCreds issues fixed admin credentials, as the manager's CA would.
type fakeCreds struct{}

func (fakeCreds) IssueAdmin(_ context.Context, lifetime time.Duration) (admin.AdminCredentials, error) {
	return admin.AdminCredentials{ID: "admin-0123456789ab", CertPEM: []byte("CERT\n"), KeyPEM: []byte("KEY\n"), RootPEM: []byte("ROOT\n"),
		NotAfter: time.Unix(1700000000, 0).Add(lifetime)}, nil
}

func (fakeCreds) RevokeAdmin(context.Context, string) error { return nil }

type fixedTokens struct{}

func (fixedTokens) JoinToken(_ context.Context, role types.NodeRole, rotate bool) (string, error) {
	if rotate {
		return "LBXTKN-1-rotated-" + role.String(), nil
	}
	return "LBXTKN-1-" + role.String(), nil
}

// run runs the CLI with args (and stdin) and returns stdout and the error.
func (e *cliEnv) run(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(append([]string{"-H", e.host}, args...))
	err := root.Execute()
	return out.String(), err
}

func (e *cliEnv) mustRun(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, err := e.run(t, stdin, args...)
	if err != nil {
		t.Fatalf("lockbox %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func TestCLISecretsAndServices(t *testing.T) {
	e := newCLIEnv(t, "")
	id := strings.TrimSpace(e.mustRun(t, "hunter2\n", "secret", "create", "--label", "env=prod", "db_pw", "-"))
	if len(id) != identity.IDLength {
		t.Fatalf("create printed %q, want an ID", id)
	}
	file := filepath.Join(t.TempDir(), "cert")
	writeFile(t, file, "CERTDATA")
	e.mustRun(t, "", "secret", "create", "tls_cert", file)

	out := e.mustRun(t, "", "secret", "ls")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "NAME") ||
		!strings.Contains(lines[0], "CREATED") || !strings.Contains(lines[0], "UPDATED") ||
		!strings.Contains(lines[1], "db_pw") || !strings.Contains(lines[1], "Less than a second ago") {
		t.Fatalf("secret ls:\n%s", out)
	}
	if out := e.mustRun(t, "", "secret", "ls", "-q"); strings.Count(out, "\n") != 2 || !strings.Contains(out, id) {
		t.Fatalf("secret ls -q:\n%s", out)
	}
	if out := e.mustRun(t, "", "secret", "ls", "--format", "{{.Name}}={{.Size}}"); out != "db_pw=8\ntls_cert=8\n" {
		t.Fatalf("secret ls --format:\n%q", out)
	}
	out = e.mustRun(t, "", "secret", "ls", "--format", "json")
	var row map[string]any
	if err := json.Unmarshal([]byte(strings.Split(out, "\n")[0]), &row); err != nil || row["Name"] != "db_pw" {
		t.Fatalf("secret ls --format json: %v\n%s", err, out)
	}

	out = e.mustRun(t, "", "secret", "inspect", "db_pw")
	var insp []map[string]any
	if err := json.Unmarshal([]byte(out), &insp); err != nil || len(insp) != 1 || insp[0]["ID"] != id {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	if strings.Contains(out, "hunter2") {
		t.Fatal("inspect shows data")
	}
	if _, err := e.run(t, "", "secret", "inspect", "db_pw", "nope"); err == nil || !strings.Contains(err.Error(), "secret 'nope' not found") {
		t.Fatalf("inspect missing: %v", err)
	}

	e.mustRun(t, "", "service", "create", "web", "--secret", "db_pw",
		"--secret", "source=tls_cert,target=/etc/web/cert.pem,uid=33,gid=33,mode=0400",
		"--constraint", "node.labels.zone==east")
	_, err := e.run(t, "", "secret", "rm", "db_pw")
	if err == nil || err.Error() != "secret 'db_pw' is in use by the following service: web" {
		t.Fatalf("rm in-use: %v", err)
	}
	out = e.mustRun(t, "", "service", "inspect", "web")
	// docker's API has File.Mode as a number (os.FileMode): 0400 is 256, 0444 is 292.
	if !strings.Contains(out, `"Mode": 256`) || !strings.Contains(out, `"/etc/web/cert.pem"`) || !strings.Contains(out, `"Mode": 292`) {
		t.Fatalf("service inspect:\n%s", out)
	}

	e.mustRun(t, "", "service", "update", "web", "--secret-rm", "db_pw", "--constraint-rm", "node.labels.zone == east",
		"--constraint-add", "node.role==worker")
	svc, err := e.store.GetService(context.Background(), "web")
	if err != nil {
		t.Fatal(err)
	}
	if len(svc.Spec.Secrets) != 1 || svc.Spec.Secrets[0].SecretName != "tls_cert" ||
		len(svc.Spec.Placement.Constraints) != 1 || svc.Spec.Placement.Constraints[0] != "node.role==worker" {
		t.Fatalf("after update: %v", svc.Spec)
	}
	if out := e.mustRun(t, "", "secret", "rm", "db_pw"); out != "db_pw\n" {
		t.Fatalf("rm: %q", out)
	}
	if _, err := e.run(t, "", "service", "update", "web", "--secret-add", "source=nope"); err == nil || !strings.Contains(err.Error(), "secret 'nope' not found") {
		t.Fatalf("update with unknown secret: %v", err)
	}
	if out := e.mustRun(t, "", "service", "ls"); !strings.Contains(out, "web") || !strings.Contains(out, "tls_cert") {
		t.Fatalf("service ls:\n%s", out)
	}
	e.mustRun(t, "", "service", "rm", "web")
	e.mustRun(t, "", "secret", "rm", "tls_cert")
}

func TestCLIErrors(t *testing.T) {
	e := newCLIEnv(t, "")
	tests := []struct {
		stdin string
		args  []string
		want  string
	}{
		{"", []string{"secret", "create", "x", "-"}, "secret data is empty"},
		{strings.Repeat("a", 512000), []string{"secret", "create", "x", "-"}, "smaller than 512000"},
		{strings.Repeat("a", 600000), []string{"secret", "create", "x", "-"}, "holds more than 512000 bytes"},
		{"x", []string{"secret", "create", "bad/name", "-"}, "invalid secret name"},
		{"x", []string{"secret", "create", "x", "/does/not/exist"}, "no such file"},
		{"", []string{"service", "create", "s", "--secret", "source=a,bogus=1"}, "unknown field"},
		{"", []string{"service", "create", "s", "--secret", "source=a,mode=0999"}, "invalid mode"},
		{"", []string{"service", "create", "s", "--secret", "source=a,mode=440"}, "ambiguous"},
		{"", []string{"service", "create", "s", "--secret", "nope"}, "secret 'nope' not found"},
		{"", []string{"service", "create", "s", "--constraint", "node.zone==a"}, "unknown key"},
		{"", []string{"node", "rm", "n1"}, "not available"},
		{"", []string{"join-token", "boss"}, "want worker or manager"},
		{"", []string{"unlock-key"}, "autolock is off"},
		{"", []string{"-H", "http://x", "secret", "ls"}, "unknown scheme"},
		{"", []string{"-H", "tcp://127.0.0.1:1", "secret", "ls"}, "needs --tlscacert"},
	}
	for _, tt := range tests {
		out, err := e.run(t, tt.stdin, tt.args...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("lockbox %s: %v (out %q), want error containing %q", strings.Join(tt.args, " "), err, out, tt.want)
		}
	}
	// Unreachable manager: a clear message, quickly.
	root := newRootCommand()
	root.SetArgs([]string{"-H", "unix://" + filepath.Join(t.TempDir(), "none.sock"), "--timeout", "5s", "secret", "ls"})
	start := time.Now()
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "cannot reach the manager") {
		t.Fatalf("unreachable: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("unreachable manager took the whole timeout")
	}
}

func TestCLIJoinTokenAndUnlock(t *testing.T) {
	key, _ := keys.NewUnlockKey()
	e := newCLIEnv(t, key)
	if out := e.mustRun(t, "", "join-token", "-q", "worker"); out != "LBXTKN-1-NODE_ROLE_WORKER\n" {
		t.Fatalf("join-token -q: %q", out)
	}
	if out := e.mustRun(t, "", "join-token", "--rotate", "manager"); !strings.Contains(out, "rotated") ||
		!strings.Contains(out, "echo LBXTKN-1-rotated-NODE_ROLE_MANAGER | lockbox manager --data-dir /var/lib/lockbox-manager --join 10.0.0.1:4243 --token-file -\n") ||
		!strings.Contains(out, "This token works for one manager join.") {
		t.Fatalf("join-token --rotate:\n%s", out)
	}
	// Over the unix socket too, the join command names the cluster's
	// managers (no placeholder), as docker swarm join-token does.
	want := "echo LBXTKN-1-NODE_ROLE_WORKER | lockbox agent --manager 10.0.0.1:4243,10.0.0.2:4243 --token-file - --state-dir /var/lib/lockbox/agent\n"
	if out := e.mustRun(t, "", "join-token", "worker"); !strings.Contains(out, want) || strings.Contains(out, "MANAGER_ADDR") || strings.Contains(out, "one manager join") {
		t.Fatalf("join-token worker:\n%s", out)
	}
	if out := e.mustRun(t, "", "unlock-key", "-q"); out != key+"\n" {
		t.Fatalf("unlock-key -q: %q", out)
	}
	out := e.mustRun(t, "", "unlock-key", "--rotate")
	if !strings.Contains(out, "LBXKEY-1-") || strings.Contains(out, key) {
		t.Fatalf("unlock-key --rotate:\n%s", out)
	}
	if _, err := e.run(t, key+"\n", "unlock"); err == nil || !strings.Contains(err.Error(), "not locked") {
		t.Fatalf("unlock an unlocked manager: %v", err)
	}
	if _, err := e.run(t, "", "unlock"); err == nil || !strings.Contains(err.Error(), "no unlock key") {
		t.Fatalf("unlock with empty stdin: %v", err)
	}
}

func TestParseSecretRef(t *testing.T) {
	tests := []struct {
		in   string
		want string // source,target,uid,gid,mode or "" for an error
	}{
		{"db", "db,,,,0"},
		{"source=db", "db,,,,0"},
		{"source=db,target=x,uid=1,gid=2,mode=0400", "db,x,1,2,256"},
		{"src=db,mode=0644", "db,,,,420"},
		{"src=db,mode=0o644", "db,,,,420"},
		{"src=db,mode=292", "db,,,,292"},
		{"src=db,mode=7", "db,,,,7"},
		{"src=db,mode=644", ""}, // docker 644 = 01204, Lockbox used to read 0644: refused
		{"src=db,mode=0", ""},
		{"src=db,mode=0x", ""},
		{"target=x", ""},
		{"source=db,mode=9", "db,,,,9"},
		{"source=db,x", ""},
		{"", ""},
	}
	for _, tt := range tests {
		r, err := parseSecretRef(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("%q: no error", tt.in)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		got := strings.Join([]string{r.SecretName, r.Target.Name, r.Target.Uid, r.Target.Gid, itoa(r.Target.Mode)}, ",")
		if got != tt.want {
			t.Errorf("%q = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestParseSecretRefQuoting(t *testing.T) {
	r, err := parseSecretRef(`source=db,"target=a,b"`)
	if err != nil || r.Target.Name != "a,b" {
		t.Fatalf("csv quoting: %v %v", r, err)
	}
}

func TestHumanDuration(t *testing.T) {
	tests := map[time.Duration]string{
		0:                    "Less than a second",
		time.Second:          "1 second",
		30 * time.Second:     "30 seconds",
		90 * time.Second:     "About a minute",
		2 * time.Minute:      "2 minutes",
		time.Hour:            "About an hour",
		5 * time.Hour:        "5 hours",
		3 * 24 * time.Hour:   "3 days",
		20 * 24 * time.Hour:  "2 weeks",
		90 * 24 * time.Hour:  "3 months",
		800 * 24 * time.Hour: "2 years",
	}
	for d, want := range tests {
		if got := humanDuration(d); got != want {
			t.Errorf("%v = %q, want %q", d, got, want)
		}
	}
}

func itoa(m uint32) string { return strconv.FormatUint(uint64(m), 10) }

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func FuzzParseSecretRef(f *testing.F) {
	for _, s := range []string{"db", "source=db,target=x,uid=1,gid=2,mode=0400", `source=db,"target=a,b"`, "mode=", ",,", "source=db,signal=SIGHUP", "source=db,signal=9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parseSecretRef(s)
		if err != nil {
			return
		}
		if r.SecretName == "" || r.Target == nil || r.Target.Mode > 1<<32-1 {
			t.Fatalf("%q parsed to %v", s, r)
		}
		if _, err := validation.ParseSignal(r.Signal); r.Signal != "" && err != nil {
			t.Fatalf("%q parsed to signal %q, which the nodes refuse: %v", s, r.Signal, err)
		}
	})
}

func TestCLIDataKeyRotate(t *testing.T) {
	e := newCLIEnv(t, "")
	for _, name := range []string{"a", "b"} {
		e.mustRun(t, "value-"+name, "secret", "create", name, "-")
	}
	out := e.mustRun(t, "", "data-key", "rotate")
	var n int
	if _, err := fmt.Sscanf(out, "Rotated the data key; %d sealed values re-sealed.", &n); err != nil || n < 2 {
		t.Fatalf("data-key rotate: %q (want at least the 2 secrets re-sealed)", out)
	}
	// The secrets are still there and the cluster takes new ones.
	if out := e.mustRun(t, "", "secret", "ls", "-q"); strings.Count(out, "\n") != 2 {
		t.Fatalf("secret ls after rotation: %q", out)
	}
	e.mustRun(t, "value-c", "secret", "create", "c", "-")
}

func TestCLIAdminCredentials(t *testing.T) {
	e := newCLIEnv(t, "")
	dir := filepath.Join(t.TempDir(), "creds")
	out := e.mustRun(t, "", "admin-credentials", "create", "--dir", dir, "--lifetime", "2h")
	if !strings.Contains(out, "admin-0123456789ab") || !strings.Contains(out, "2023-11-15T00:13:20Z") || !strings.Contains(out, "--tlskey "+filepath.Join(dir, "key.pem")) {
		t.Fatalf("create:\n%s", out)
	}
	for name, want := range map[string]string{"ca.pem": "ROOT\n", "cert.pem": "CERT\n", "key.pem": "KEY\n"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(b) != want {
			t.Errorf("%s: %q %v", name, b, err)
		}
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode: %v %v", name, fi.Mode(), err)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode: %v %v", fi.Mode(), err)
	}
	if _, err := e.run(t, "", "admin-credentials", "create"); err == nil || !strings.Contains(err.Error(), "--dir is required") {
		t.Errorf("create without --dir: %v", err)
	}
	if _, err := e.run(t, "", "admin-credentials", "create", "--dir", dir, "--lifetime", "1000h"); err == nil || !strings.Contains(err.Error(), "lives from 1m to") {
		t.Errorf("too long a lifetime: %v", err)
	}
	if out := e.mustRun(t, "", "admin-credentials", "rm", "admin-0123456789ab"); out != "admin-0123456789ab\n" {
		t.Errorf("rm: %q", out)
	}
	if _, err := e.run(t, "", "admin-credentials", "rm", "somenode"); err == nil || !strings.Contains(err.Error(), "node rm") {
		t.Errorf("rm of a node ID: %v", err)
	}
}
