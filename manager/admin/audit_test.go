package admin_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/admin"
	"github.com/lockbox-project/lockbox/manager/ca"
	"github.com/lockbox-project/lockbox/manager/keys"
	"github.com/lockbox-project/lockbox/manager/store"
	"github.com/lockbox-project/lockbox/pki"
)

func listAudit(t *testing.T, c adminapi.AdminClient, since *timestamppb.Timestamp) []*types.AuditEntry {
	t.Helper()
	var out []*types.AuditEntry
	after := ""
	for {
		resp, err := c.ListAudit(context.Background(), &adminapi.ListAuditRequest{Since: since, After: after, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, resp.Entries...)
		if resp.NextPage == "" {
			return out
		}
		after = resp.NextPage
	}
}

// The audit story of the admin API: each change names its actor (the root
// socket here), --since filters, and no stored entry holds secret data.
func TestAuditOfAdminChanges(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, admin.Config{}, "")
	marker := "AUDIT-MARKER-4f0e9b2c71d8a6"
	e.createSecret(t, "db_pw", []byte(marker))
	svc, err := e.client.CreateService(ctx, &adminapi.CreateServiceRequest{Spec: svcSpec("web", []*types.SecretReference{ref("db_pw", "db_pw", "", "", 0)})})
	if err != nil {
		t.Fatal(err)
	}
	mid := time.Now()
	if _, err := e.client.UpdateService(ctx, &adminapi.UpdateServiceRequest{NameOrId: "web", Version: svc.Service.Meta.Version, Spec: svcSpec("web", nil)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.RemoveSecret(ctx, &adminapi.RemoveSecretRequest{NameOrId: "db_pw"}); err != nil {
		t.Fatal(err)
	}
	got := listAudit(t, e.client, nil)
	want := []string{store.AuditSecretCreate, store.AuditServiceCreate, store.AuditServiceUpdate, store.AuditSecretRemove}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d: %v", len(got), len(want), got)
	}
	for i, w := range want {
		if got[i].Action != w || got[i].Actor != store.AuditActorLocalRoot {
			t.Errorf("entry %d = %s by %q, want %s by %q", i, got[i].Action, got[i].Actor, w, store.AuditActorLocalRoot)
		}
	}
	if later := listAudit(t, e.client, timestamppb.New(mid)); len(later) != 2 || later[0].Action != store.AuditServiceUpdate {
		t.Errorf("since the update: %v", later)
	}
	resp, err := e.store.Client().Get(ctx, e.store.Prefix()+"audit/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != len(want) {
		t.Fatalf("%d stored entries", len(resp.Kvs))
	}
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Value), marker) {
			t.Fatalf("audit entry %s holds the secret's data", kv.Key)
		}
	}
}

// Over TCP the actor is the admin certificate's identity.
func TestAuditActorIsAdminCertificate(t *testing.T) {
	e := newEnv(t, admin.Config{}, "")
	root, err := ca.NewRoot()
	if err != nil {
		t.Fatal(err)
	}
	kp, err := root.NewKeyPair(ca.CertRequest{NodeID: admin.AdminIDPrefix + "0123456789ab", Role: pki.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(kp.CertPEM)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}}})
	a, err := admin.New(admin.Config{Store: e.store})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateSecret(ctx, &adminapi.CreateSecretRequest{Spec: &types.SecretSpec{Name: "s"}, Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	got := listAudit(t, e.client, nil)
	if len(got) != 1 || got[0].Actor != "admin-0123456789ab" || got[0].Action != store.AuditSecretCreate || got[0].ObjectName != "s" {
		t.Fatalf("entries %v", got)
	}
}

type auditTokens struct{}

func (auditTokens) JoinToken(_ context.Context, role types.NodeRole, rotate bool) (string, error) {
	return "LBXTKN-1-AUDITTOKENVALUE-" + role.String(), nil
}

// Reads and rotations of keys and tokens are recorded by who and what,
// never with the value.
func TestAuditKeysAndTokens(t *testing.T) {
	ctx := context.Background()
	unlockKey, err := keys.NewUnlockKey()
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, admin.Config{Tokens: auditTokens{}}, unlockKey)
	if _, err := e.client.GetJoinToken(ctx, &adminapi.GetJoinTokenRequest{Role: types.NodeRole_NODE_ROLE_MANAGER}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.GetJoinToken(ctx, &adminapi.GetJoinTokenRequest{Role: types.NodeRole_NODE_ROLE_WORKER, Rotate: true}); err != nil {
		t.Fatal(err)
	}
	if uk, err := e.client.GetUnlockKey(ctx, &adminapi.GetUnlockKeyRequest{}); err != nil || uk.GetUnlockKey() != unlockKey {
		t.Fatalf("unlock key: %v", err)
	}
	if _, err := e.client.RotateDataKey(ctx, &adminapi.RotateDataKeyRequest{}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, en := range listAudit(t, e.client, nil) {
		got = append(got, en.Actor+" "+en.Action+" "+en.ObjectName)
	}
	want := []string{
		"local root join-token.read manager",
		"local root join-token.rotate worker",
		"local root unlock-key.read ",
		"local root data-key.rotate ",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	resp, err := e.store.Client().Get(ctx, e.store.Prefix()+"audit/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		for _, v := range []string{"AUDITTOKENVALUE", unlockKey} {
			if strings.Contains(string(kv.Value), v) {
				t.Fatalf("audit entry %s holds a token or key", kv.Key)
			}
		}
	}
}
