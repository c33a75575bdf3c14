package admin_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/admin"
	"github.com/lockbox-project/lockbox/manager/etcd"
	"github.com/lockbox-project/lockbox/manager/etcd/etcdtest"
	"github.com/lockbox-project/lockbox/manager/keys"
	"github.com/lockbox-project/lockbox/manager/store"
)

type env struct {
	etcd    *etcd.Member
	etcdDir string
	store   *store.Store
	keys    *keys.Manager
	client  adminapi.AdminClient
}

type fakeRevoker struct {
	mu      sync.Mutex
	revoked []string
}

func (f *fakeRevoker) RevokeNode(_ context.Context, n *types.Node) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revoked = append(f.revoked, n.Id)
	return nil
}

// newEnv runs the Admin service on a real etcd, real keys, over a real
// gRPC unix socket.
func newEnv(tb testing.TB, cfg admin.Config, unlockKey string) *env {
	tb.Helper()
	ctx := context.Background()
	etcdDir := tb.TempDir()
	srv := etcdtest.StartIn(tb, etcdDir)
	cli := srv.Client()
	km := keys.NewManager(store.New(cli, nil).Keyring())
	tb.Cleanup(km.Close)
	var kek *keys.KEK
	var err error
	if unlockKey != "" {
		kek, err = keys.KEKFromUnlockKey(unlockKey)
	} else {
		kek, err = keys.NewKEK()
	}
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := km.Bootstrap(ctx, kek, unlockKey); err != nil {
		tb.Fatal(err)
	}
	kek.Zero()
	st := store.New(cli, km)
	cfg.Store = st
	if cfg.Unlocker == nil {
		cfg.Unlocker = admin.KeyManager{Keys: km, Store: st}
		cfg.DataKeys = admin.KeyManager{Keys: km, Store: st}
	}
	a, err := admin.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	sock := filepath.Join(tb.TempDir(), "admin.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		tb.Fatal(err)
	}
	gs := grpc.NewServer()
	adminapi.RegisterAdminServer(gs, a)
	go gs.Serve(l)
	tb.Cleanup(gs.Stop)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return &env{etcd: srv, etcdDir: etcdDir, store: st, keys: km, client: adminapi.NewAdminClient(conn)}
}

func (e *env) createSecret(t testing.TB, name string, data []byte) *types.Secret {
	t.Helper()
	resp, err := e.client.CreateSecret(context.Background(), &adminapi.CreateSecretRequest{Spec: &types.SecretSpec{Name: name}, Data: data})
	if err != nil {
		t.Fatalf("create secret %s: %v", name, err)
	}
	return resp.Secret
}

func ref(source, target, uid, gid string, mode uint32) *types.SecretReference {
	return &types.SecretReference{SecretName: source, Target: &types.FileTarget{Name: target, Uid: uid, Gid: gid, Mode: mode}}
}

func svcSpec(name string, refs []*types.SecretReference, cons ...string) *types.ServiceSpec {
	return &types.ServiceSpec{Name: name, Secrets: refs, Placement: &types.Placement{Constraints: cons}}
}

// TestBadInput is the table: every bad input is a clear error with
// the right code, and nothing is written.
func TestBadInput(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, admin.Config{}, "")
	e.createSecret(t, "exists", []byte("x"))
	if _, err := e.client.CreateService(ctx, &adminapi.CreateServiceRequest{Spec: svcSpec("taken", nil)}); err != nil {
		t.Fatal(err)
	}
	before := dump(t, e)

	secret := func(name string, data []byte, labels map[string]string) func() error {
		return func() error {
			_, err := e.client.CreateSecret(ctx, &adminapi.CreateSecretRequest{Spec: &types.SecretSpec{Name: name, Labels: labels}, Data: data})
			return err
		}
	}
	service := func(spec *types.ServiceSpec) func() error {
		return func() error {
			_, err := e.client.CreateService(ctx, &adminapi.CreateServiceRequest{Spec: spec})
			return err
		}
	}
	ok := []*types.SecretReference{ref("exists", "", "", "", 0)}
	tests := []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{"oversized 512000", secret("big", make([]byte, 512000), nil), codes.InvalidArgument, "smaller than 512000"},
		{"empty data", secret("empty", nil, nil), codes.InvalidArgument, "empty"},
		{"empty name", secret("", []byte("x"), nil), codes.InvalidArgument, "name is empty"},
		{"name with slash", secret("a/b", []byte("x"), nil), codes.InvalidArgument, "invalid secret name"},
		{"name with leading dot", secret(".a", []byte("x"), nil), codes.InvalidArgument, "invalid secret name"},
		{"name with trailing dash", secret("a-", []byte("x"), nil), codes.InvalidArgument, "invalid secret name"},
		{"name with space", secret("a b", []byte("x"), nil), codes.InvalidArgument, "invalid secret name"},
		{"name 65 chars", secret(strings.Repeat("a", 65), []byte("x"), nil), codes.InvalidArgument, "limit is 64"},
		{"duplicate secret", secret("exists", []byte("x"), nil), codes.AlreadyExists, "secret 'exists' already exists"},
		// swarm: "secret EXISTS already exists" (swarmkit controlapi
		// CreateSecret on store.ErrNameConflict; the name index is
		// lower-cased), so Lockbox refuses it too and says why.
		{"duplicate secret, other case", secret("EXISTS", []byte("x"), nil), codes.AlreadyExists,
			"secret 'EXISTS' already exists: names compare without regard to case, as in swarm, and secret 'exists' has this one"},
		{"label empty key", secret("l", []byte("x"), map[string]string{"": "v"}), codes.InvalidArgument, "empty key"},
		{"label key with =", secret("l", []byte("x"), map[string]string{"a=b": "v"}), codes.InvalidArgument, "'='"},
		{"missing spec", func() error {
			_, err := e.client.CreateSecret(ctx, &adminapi.CreateSecretRequest{Data: []byte("x")})
			return err
		}, codes.InvalidArgument, "spec is missing"},

		{"duplicate service", service(svcSpec("taken", ok)), codes.AlreadyExists, "service 'taken' already exists"},
		{"duplicate service, other case", service(svcSpec("TAKEN", ok)), codes.AlreadyExists,
			"service 'TAKEN' already exists: names compare without regard to case, as in swarm, and service 'taken' has this one"},
		{"bad service name", service(svcSpec("bad name", ok)), codes.InvalidArgument, "invalid service name"},
		// swarm: "name must be valid as a DNS name component" / "name must
		// be 63 characters or fewer" (swarmkit controlapi validateAnnotations).
		{"service name with a dot", service(svcSpec("a.b", ok)), codes.InvalidArgument,
			`invalid service name "a.b": a service name has letters, digits, '-' and '_', starting and ending with a letter or digit, at most 63 characters (swarm's rule for service names: no '.')`},
		{"service name 64 chars", service(svcSpec(strings.Repeat("s", 64), ok)), codes.InvalidArgument, "at most 63 characters"},
		{"unknown secret", service(svcSpec("s1", []*types.SecretReference{ref("nope", "", "", "", 0)})), codes.InvalidArgument, "secret 'nope' not found"},
		{"no source", service(svcSpec("s1", []*types.SecretReference{ref("", "t", "", "", 0)})), codes.InvalidArgument, "names no secret"},
		{"bad constraint", service(svcSpec("s1", ok, "node.labels.zone=east")), codes.InvalidArgument, "invalid constraint"},
		{"unknown constraint key", service(svcSpec("s1", ok, "node.ip==1.2.3.4")), codes.InvalidArgument, "unknown key"},
		{"bad role", service(svcSpec("s1", ok, "node.role==boss")), codes.InvalidArgument, "worker or manager"},
		{"target escapes", service(svcSpec("s1", []*types.SecretReference{ref("exists", "../etc/passwd", "", "", 0)})), codes.InvalidArgument, `".."`},
		{"absolute target escapes", service(svcSpec("s1", []*types.SecretReference{ref("exists", "/run/../etc/x", "", "", 0)})), codes.InvalidArgument, `".."`},
		{"target is a directory", service(svcSpec("s1", []*types.SecretReference{ref("exists", "dir/", "", "", 0)})), codes.InvalidArgument, "not a directory"},
		{"two on one target", service(svcSpec("s1", []*types.SecretReference{ref("exists", "t", "", "", 0), ref("exists", "/run/secrets/t", "", "", 0)})), codes.InvalidArgument, "same target"},
		{"uid not a number", service(svcSpec("s1", []*types.SecretReference{ref("exists", "", "root", "", 0)})), codes.InvalidArgument, "invalid uid"},
		{"uid negative", service(svcSpec("s1", []*types.SecretReference{ref("exists", "", "-1", "", 0)})), codes.InvalidArgument, "invalid uid"},
		{"uid 2^32-1", service(svcSpec("s1", []*types.SecretReference{ref("exists", "", "4294967295", "", 0)})), codes.InvalidArgument, "invalid uid"},
		{"gid too big", service(svcSpec("s1", []*types.SecretReference{ref("exists", "", "", "99999999999", 0)})), codes.InvalidArgument, "invalid gid"},
		{"mode too big", service(svcSpec("s1", []*types.SecretReference{ref("exists", "", "", "", 0o1777)})), codes.InvalidArgument, "invalid mode"},
		{"windows with uid", service(svcSpec("s1", []*types.SecretReference{ref("exists", "", "1", "", 0)}, "node.platform.os==windows")), codes.InvalidArgument, "uid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			st, _ := status.FromError(err)
			if err == nil || st.Code() != tt.code || !strings.Contains(st.Message(), tt.msg) {
				t.Fatalf("got %v (code %v), want %v containing %q", err, st.Code(), tt.code, tt.msg)
			}
		})
	}
	if after := dump(t, e); after != before {
		t.Fatalf("store changed by refused calls:\nbefore %s\nafter  %s", before, after)
	}

	// The edges that are fine.
	e.createSecret(t, strings.Repeat("a", 64), make([]byte, 511999))
	e.createSecret(t, "a", []byte{0})
	if _, err := e.client.CreateService(ctx, &adminapi.CreateServiceRequest{Spec: svcSpec("edge",
		[]*types.SecretReference{ref("exists", "", "4294967294", "0", 0o777), ref("exists", "/etc/app/pw", "", "", 0)},
		"node.labels.zone==east", "node.role!=manager")}); err != nil {
		t.Fatal(err)
	}
}

// dump is every key and value under the store prefix, except data, which
// is sealed with a fresh nonce and so differs between equal writes.
func dump(t testing.TB, e *env) string {
	resp, err := e.store.Client().Get(context.Background(), e.store.Prefix(), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, kv := range resp.Kvs {
		fmt.Fprintf(&b, "%s@%d;", kv.Key, kv.ModRevision)
	}
	return b.String()
}

func TestSecretInUseAndUpdates(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, admin.Config{}, "")
	e.createSecret(t, "db_pw", []byte("x"))
	for _, n := range []string{"web", "api"} {
		if _, err := e.client.CreateService(ctx, &adminapi.CreateServiceRequest{Spec: svcSpec(n, []*types.SecretReference{ref("db_pw", "", "", "", 0)})}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := e.client.RemoveSecret(ctx, &adminapi.RemoveSecretRequest{NameOrId: "db_pw"})
	if st, _ := status.FromError(err); st.Code() != codes.FailedPrecondition || st.Message() != "secret 'db_pw' is in use by the following services: api, web" {
		t.Fatalf("rm in-use: %v", err)
	}
	get, err := e.client.GetService(ctx, &adminapi.GetServiceRequest{NameOrId: "web"})
	if err != nil {
		t.Fatal(err)
	}
	spec := get.Service.Spec
	spec.Secrets = nil
	upd, err := e.client.UpdateService(ctx, &adminapi.UpdateServiceRequest{NameOrId: "web", Version: get.Service.Meta.Version, Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.client.UpdateService(ctx, &adminapi.UpdateServiceRequest{NameOrId: "web", Version: get.Service.Meta.Version, Spec: spec})
	if status.Code(err) != codes.Aborted {
		t.Fatalf("stale update: %v", err)
	}
	_, err = e.client.RemoveSecret(ctx, &adminapi.RemoveSecretRequest{NameOrId: "db_pw"})
	if st, _ := status.FromError(err); st.Message() != "secret 'db_pw' is in use by the following service: api" {
		t.Fatalf("rm in-use by one: %v", err)
	}
	if _, err := e.client.RemoveService(ctx, &adminapi.RemoveServiceRequest{NameOrId: "api"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.RemoveSecret(ctx, &adminapi.RemoveSecretRequest{NameOrId: "db_pw"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.GetSecret(ctx, &adminapi.GetSecretRequest{NameOrId: "db_pw"}); status.Code(err) != codes.NotFound {
		t.Fatalf("get removed: %v", err)
	}
	_ = upd
}

func TestNodes(t *testing.T) {
	ctx := context.Background()
	rev := &fakeRevoker{}
	e := newEnv(t, admin.Config{Nodes: rev}, "")
	n, err := e.store.CreateNode(ctx, &types.Node{Description: &types.NodeDescription{Hostname: "h1"}, State: types.NodeState_NODE_STATE_READY})
	if err != nil {
		t.Fatal(err)
	}
	upd, err := e.client.UpdateNode(ctx, &adminapi.UpdateNodeRequest{NameOrId: "h1", Version: n.Meta.Version, Spec: &types.NodeSpec{Labels: map[string]string{"zone": "east"}}})
	if err != nil || upd.Node.Spec.Labels["zone"] != "east" {
		t.Fatalf("update node: %v", err)
	}
	if _, err := e.client.RemoveNode(ctx, &adminapi.RemoveNodeRequest{NameOrId: n.Id}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("rm ready node: %v", err)
	}
	if len(rev.revoked) != 0 {
		t.Fatal("refused removal revoked the node")
	}
	if _, err := e.client.RemoveNode(ctx, &adminapi.RemoveNodeRequest{NameOrId: n.Id, Force: true}); err != nil {
		t.Fatal(err)
	}
	if len(rev.revoked) != 1 || rev.revoked[0] != n.Id {
		t.Fatalf("revoked %v", rev.revoked)
	}
	list, err := e.client.ListNodes(ctx, &adminapi.ListNodesRequest{})
	if err != nil || len(list.Nodes) != 0 {
		t.Fatalf("nodes after rm: %v %v", list, err)
	}
}

func TestLockedManagerRefuses(t *testing.T) {
	ctx := context.Background()
	key, _ := keys.NewUnlockKey()
	e := newEnv(t, admin.Config{}, key)
	e.createSecret(t, "before", []byte("x"))
	got, err := e.client.GetUnlockKey(ctx, &adminapi.GetUnlockKeyRequest{})
	if err != nil || got.UnlockKey != key || !got.Autolock {
		t.Fatalf("unlock key: %v", err)
	}
	e.keys.Close() // as after a restart: locked
	if _, err := e.client.ListSecrets(ctx, &adminapi.ListSecretsRequest{}); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "lockbox unlock") {
		t.Fatalf("list while locked: %v", err)
	}
	if _, err := e.client.Unlock(ctx, &adminapi.UnlockRequest{UnlockKey: "LBXKEY-1-AAAA"}); status.Code(err) != codes.InvalidArgument || strings.Contains(err.Error(), "AAAA") {
		t.Fatalf("bad key: %v", err)
	}
	other, _ := keys.NewUnlockKey()
	if _, err := e.client.Unlock(ctx, &adminapi.UnlockRequest{UnlockKey: other}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "wrong unlock key") {
		t.Fatalf("wrong key: %v", err)
	}
	if _, err := e.client.Unlock(ctx, &adminapi.UnlockRequest{UnlockKey: key}); err != nil {
		t.Fatal(err)
	}
	list, err := e.client.ListSecrets(ctx, &adminapi.ListSecretsRequest{})
	if err != nil || len(list.Secrets) != 1 {
		t.Fatalf("after unlock: %v", err)
	}
	rot, err := e.client.GetUnlockKey(ctx, &adminapi.GetUnlockKeyRequest{Rotate: true})
	if err != nil || rot.UnlockKey == key {
		t.Fatalf("rotate: %v", err)
	}
	rs, err := e.client.RotateDataKey(ctx, &adminapi.RotateDataKeyRequest{})
	if err != nil || rs.Resealed != 1 {
		t.Fatalf("rotate data key: %v %v", rs, err)
	}
}

// TestPlaintextScan creates secrets holding a marker through the API,
// stops etcd, and reads every byte under its data dir: the marker must
// not be there, in any file (WAL, snapshots, bbolt).
func TestPlaintextScan(t *testing.T) {
	e := newEnv(t, admin.Config{}, "")
	marker := []byte("LOCKBOX-PLAINTEXT-MARKER-7f3a9c")
	for i := range 50 {
		data := append(bytes.Repeat(marker, 1+i%20), fmt.Sprintf("-%d", i)...)
		e.createSecret(t, fmt.Sprintf("scan%d", i), data)
	}
	// Labels and names are not secret; data is. Make sure the scan would
	// see a plaintext write: the name must be found.
	e.etcd.Close()
	var files, hits, nameHits int
	err := filepath.WalkDir(e.etcdDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		hits += bytes.Count(b, marker)
		hits += bytes.Count(b, marker[:16])
		nameHits += bytes.Count(b, []byte("scan49"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 || nameHits == 0 {
		t.Fatalf("scan saw %d files and %d name hits: it would not see plaintext either", files, nameHits)
	}
	if hits != 0 {
		t.Fatalf("%d plaintext hits in %s", hits, e.etcdDir)
	}
	t.Logf("scanned %d files: 0 hits of the marker, %d of a secret name", files, nameHits)
}

func TestInspectNeverReturnsData(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, admin.Config{}, "")
	e.createSecret(t, "s", []byte("TOPSECRET-DATA"))
	got, err := e.client.GetSecret(ctx, &adminapi.GetSecretRequest{NameOrId: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(got.String(), "TOPSECRET") || got.Secret.Size != 14 {
		t.Fatalf("inspect leaks data: %v", got)
	}
}
