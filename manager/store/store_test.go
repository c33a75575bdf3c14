package store_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/internal/identity"
	"github.com/lockbox-project/lockbox/manager/etcd/etcdtest"
	"github.com/lockbox-project/lockbox/manager/store"
)

// xorSealer is a test Sealer: reversible, visibly not the plaintext, and
// bound to its record (the ad is written in front and must match). The
// real one (manager/keys) is tested on its own and with the store there.
type xorSealer struct{ opened, sealed atomic.Int64 }

func (x *xorSealer) SealRecord(p, ad []byte) ([]byte, error) {
	x.sealed.Add(1)
	head := "X1:" + string(ad) + ":"
	out := append([]byte(head), p...)
	for i := len(head); i < len(out); i++ {
		out[i] ^= 0x5a
	}
	return out, nil
}

func (x *xorSealer) OpenRecord(s, ad []byte) ([]byte, error) {
	x.opened.Add(1)
	head := []byte("X1:" + string(ad) + ":")
	if !bytes.HasPrefix(s, head) {
		return nil, errors.New("not sealed by xorSealer for this record")
	}
	out := append([]byte(nil), s[len(head):]...)
	for i := range out {
		out[i] ^= 0x5a
	}
	return out, nil
}

func (x *xorSealer) Digest(p []byte) string {
	h := sha256.Sum256(append([]byte("key"), p...))
	return "sha256:" + hex.EncodeToString(h[:])
}

func newStore(t testing.TB) *store.Store {
	t.Helper()
	srv := etcdtest.Start(t)
	return store.New(srv.Client(), &xorSealer{})
}

func secretSpec(name string) *types.SecretSpec { return &types.SecretSpec{Name: name} }

func serviceSpec(name string, secrets ...string) *types.ServiceSpec {
	spec := &types.ServiceSpec{Name: name}
	for _, s := range secrets {
		spec.Secrets = append(spec.Secrets, &types.SecretReference{SecretName: s, Target: &types.FileTarget{Name: s}})
	}
	return spec
}

func TestSecretCRUD(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)

	sec, err := s.CreateSecret(ctx, &types.SecretSpec{Name: "db_pw", Labels: map[string]string{"a": "b"}}, []byte("hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	if len(sec.Id) != identity.IDLength || sec.Size != 7 || sec.Meta.Version == 0 || sec.Digest == "" {
		t.Fatalf("unexpected secret %v", sec)
	}
	for _, ref := range []string{sec.Id, "db_pw", sec.Id[:5]} {
		got, err := s.GetSecret(ctx, ref)
		if err != nil {
			t.Fatalf("get %q: %v", ref, err)
		}
		if got.Id != sec.Id || got.Meta.Version != sec.Meta.Version || got.Spec.Labels["a"] != "b" {
			t.Fatalf("get %q = %v, want %v", ref, got, sec)
		}
	}
	if _, err := s.GetSecret(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	if _, err := s.GetSecret(ctx, "../services/x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get with slash: %v", err)
	}
	data, err := s.SecretData(ctx, sec.Id)
	if err != nil || string(data) != "hunter2" {
		t.Fatalf("data = %q, %v", data, err)
	}
	for _, bad := range []string{"", "a/b", "x\x00"} {
		if _, err := s.CreateSecret(ctx, secretSpec(bad), []byte("x")); !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("name %q: %v", bad, err)
		}
		if _, err := s.CreateService(ctx, serviceSpec(bad)); !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("service name %q: %v", bad, err)
		}
	}
	if _, err := s.CreateSecret(ctx, secretSpec("db_pw"), []byte("x")); !errors.Is(err, store.ErrNameConflict) {
		t.Fatalf("duplicate create: %v", err)
	}

	upd, err := s.UpdateSecret(ctx, "db_pw", sec.Meta.Version, &types.SecretSpec{Name: "db_pw", Labels: map[string]string{"c": "d"}})
	if err != nil {
		t.Fatal(err)
	}
	if upd.Meta.Version <= sec.Meta.Version || upd.Spec.Labels["c"] != "d" || len(upd.Spec.Labels) != 1 {
		t.Fatalf("update = %v", upd)
	}
	if _, err := s.UpdateSecret(ctx, "db_pw", sec.Meta.Version, secretSpec("db_pw")); !errors.Is(err, store.ErrVersionConflict) {
		t.Fatalf("stale update: %v", err)
	}
	if _, err := s.UpdateSecret(ctx, "db_pw", upd.Meta.Version, secretSpec("other")); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("rename: %v", err)
	}

	list, err := s.ListSecrets(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("list = %v, %v", list, err)
	}
	if err := s.RemoveSecret(ctx, "db_pw"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveSecret(ctx, "db_pw"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second remove: %v", err)
	}
	if _, err := s.SecretData(ctx, sec.Id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("data after remove: %v", err)
	}
	// The name is free again.
	if _, err := s.CreateSecret(ctx, secretSpec("db_pw"), []byte("y")); err != nil {
		t.Fatal(err)
	}
}

func TestAmbiguousPrefix(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	// 37 IDs cannot all differ in their first character (base 36).
	for i := range 37 {
		if _, err := s.CreateSecret(ctx, secretSpec(fmt.Sprintf("s%d", i)), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.ListSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[byte]bool{}
	var dup string
	for _, sec := range list {
		if seen[sec.Id[0]] {
			dup = sec.Id[:1]
		}
		seen[sec.Id[0]] = true
	}
	if _, err := s.GetSecret(ctx, dup); !errors.Is(err, store.ErrAmbiguous) {
		t.Fatalf("get %q: %v, want ambiguous", dup, err)
	}
}

func TestServiceReferences(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	for _, n := range []string{"a", "b"} {
		if _, err := s.CreateSecret(ctx, secretSpec(n), []byte(n)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.CreateService(ctx, serviceSpec("web", "a", "missing")); !errors.Is(err, store.ErrUnknownSecret) {
		t.Fatalf("unknown secret: %v", err)
	}
	if svcs, _ := s.ListServices(ctx); len(svcs) != 0 {
		t.Fatalf("half-written service: %v", svcs)
	}
	web, err := s.CreateService(ctx, serviceSpec("web", "a"))
	if err != nil {
		t.Fatal(err)
	}
	if web.Spec.Secrets[0].SecretId == "" {
		t.Fatal("reference not resolved to an ID")
	}
	if _, err := s.CreateService(ctx, serviceSpec("web")); !errors.Is(err, store.ErrNameConflict) {
		t.Fatalf("duplicate service: %v", err)
	}
	api, err := s.CreateService(ctx, serviceSpec("api", "a", "b"))
	if err != nil {
		t.Fatal(err)
	}

	err = s.RemoveSecret(ctx, "a")
	var inUse *store.InUseError
	if !errors.As(err, &inUse) || !errors.Is(err, store.ErrInUse) {
		t.Fatalf("remove in-use: %v", err)
	}
	if want := "secret 'a' is in use by the following services: api, web"; err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
	err = s.RemoveSecret(ctx, "b")
	if want := "secret 'b' is in use by the following service: api"; err == nil || err.Error() != want {
		t.Fatalf("message %v, want %q", err, want)
	}

	// Drop b from api: b becomes removable; a stays in use by web and api.
	upd, err := s.UpdateService(ctx, "api", api.Meta.Version, serviceSpec("api", "a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateService(ctx, "api", api.Meta.Version, serviceSpec("api")); !errors.Is(err, store.ErrVersionConflict) {
		t.Fatalf("stale update: %v", err)
	}
	if _, err := s.UpdateService(ctx, "api", upd.Meta.Version, serviceSpec("api", "zzz")); !errors.Is(err, store.ErrUnknownSecret) {
		t.Fatalf("update with unknown secret: %v", err)
	}
	if _, err := s.UpdateService(ctx, "api", upd.Meta.Version, serviceSpec("renamed")); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("rename: %v", err)
	}
	if err := s.RemoveSecret(ctx, "b"); err != nil {
		t.Fatalf("remove b after update: %v", err)
	}
	if err := s.RemoveService(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveService(ctx, "api"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveSecret(ctx, "a"); err != nil {
		t.Fatalf("remove a after services: %v", err)
	}
	if _, err := s.GetService(ctx, web.Id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("removed service: %v", err)
	}
}

func TestConcurrentCreatesOneWins(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	const n = 16
	var wg sync.WaitGroup
	var ok, conflict atomic.Int32
	for range n {
		wg.Go(func() {
			_, err := s.CreateSecret(ctx, secretSpec("same"), []byte("x"))
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, store.ErrNameConflict):
				conflict.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 || conflict.Load() != n-1 {
		t.Fatalf("ok=%d conflict=%d", ok.Load(), conflict.Load())
	}
	list, _ := s.ListSecrets(ctx)
	if len(list) != 1 {
		t.Fatalf("%d secrets stored", len(list))
	}
}

// TestInUseRace races service creates referencing a secret against removes
// of it. Whatever the interleaving, no service may reference a missing
// secret.
func TestInUseRace(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	const rounds = 40
	for i := range rounds {
		name := fmt.Sprintf("s%d", i)
		if _, err := s.CreateSecret(ctx, secretSpec(name), []byte("x")); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			_, err := s.CreateService(ctx, serviceSpec(fmt.Sprintf("svc%d", i), name))
			if err != nil && !errors.Is(err, store.ErrUnknownSecret) {
				t.Error(err)
			}
		})
		wg.Go(func() {
			err := s.RemoveSecret(ctx, name)
			if err != nil && !errors.Is(err, store.ErrInUse) {
				t.Error(err)
			}
		})
		wg.Wait()
	}
	snap, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, sec := range snap.Secrets {
		have[sec.Id] = true
	}
	for _, svc := range snap.Services {
		for _, r := range svc.Spec.Secrets {
			if !have[r.SecretId] {
				t.Fatalf("service %s references missing secret %s", svc.Spec.Name, r.SecretName)
			}
		}
	}
	t.Logf("%d services, %d secrets left after %d races", len(snap.Services), len(snap.Secrets), rounds)
}

func TestNodes(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	n, err := s.CreateNode(ctx, &types.Node{Id: identity.NewID(), Description: &types.NodeDescription{Hostname: "h1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateNode(ctx, &types.Node{Id: n.Id}); !errors.Is(err, store.ErrNameConflict) {
		t.Fatalf("duplicate node: %v", err)
	}
	if got, err := s.GetNode(ctx, "h1"); err != nil || got.Id != n.Id {
		t.Fatalf("by hostname: %v %v", got, err)
	}
	upd, err := s.UpdateNodeSpec(ctx, n.Id, n.Meta.Version, &types.NodeSpec{Labels: map[string]string{"zone": "a"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateNodeSpec(ctx, n.Id, n.Meta.Version, &types.NodeSpec{}); !errors.Is(err, store.ErrVersionConflict) {
		t.Fatalf("stale: %v", err)
	}
	st, err := s.UpdateNode(ctx, n.Id, func(n *types.Node) error { n.State = types.NodeState_NODE_STATE_READY; return nil })
	if err != nil || st.State != types.NodeState_NODE_STATE_READY || st.Spec.Labels["zone"] != "a" || st.Meta.Version <= upd.Meta.Version {
		t.Fatalf("status update: %v %v", st, err)
	}
	if _, err := s.RemoveNode(ctx, n.Id[:6]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetNode(ctx, n.Id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after remove: %v", err)
	}
}

func TestSnapshotAndWatch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := newStore(t)
	if _, err := s.CreateSecret(ctx, secretSpec("a"), []byte("a")); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Snapshot(ctx)
	if err != nil || len(snap.Secrets) != 1 {
		t.Fatalf("snapshot %v %v", snap, err)
	}
	ch := s.Watch(ctx, snap.Revision)
	svc, err := s.CreateService(ctx, serviceSpec("web", "a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveService(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	b := <-ch
	if b.Err != nil || b.Revision != int64(svc.Meta.Version) || len(b.Events) != 1 || b.Events[0].Service == nil || b.Events[0].Deleted {
		t.Fatalf("first batch %+v", b)
	}
	b = <-ch
	if b.Err != nil || len(b.Events) != 1 || !b.Events[0].Deleted || b.Events[0].Service.GetSpec().GetName() != "web" {
		t.Fatalf("second batch %+v", b)
	}
}

func TestReseal(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t)
	x := &xorSealer{}
	s := store.New(srv.Client(), x)
	for i := range 5 {
		if _, err := s.CreateSecret(ctx, secretSpec(fmt.Sprintf("s%d", i)), []byte("data")); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.Reseal(ctx, func([]byte) bool { return true })
	if err != nil || n != 5 {
		t.Fatalf("reseal = %d, %v", n, err)
	}
	n, err = s.Reseal(ctx, func([]byte) bool { return false })
	if err != nil || n != 0 {
		t.Fatalf("reseal nothing = %d, %v", n, err)
	}
}

func TestWatchCompacted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := etcdtest.Start(t)
	cli := srv.Client()
	s := store.New(cli, &xorSealer{})
	start, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := s.CreateSecret(ctx, secretSpec(fmt.Sprintf("c%d", i)), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	now, _ := s.Revision(ctx)
	if _, err := cli.Compact(ctx, now); err != nil {
		t.Fatal(err)
	}
	b, ok := <-s.Watch(ctx, start)
	if !ok || !errors.Is(b.Err, store.ErrCompacted) {
		t.Fatalf("watch from a compacted revision: %+v", b)
	}
}

func TestWatchNodesAndSecrets(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := newStore(t)
	rev, _ := s.Revision(ctx)
	ch := s.Watch(ctx, rev)
	sec, err := s.CreateSecret(ctx, secretSpec("w"), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.CreateNode(ctx, &types.Node{Description: &types.NodeDescription{Hostname: "h"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveSecret(ctx, "w"); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		kind    store.Kind
		id      string
		deleted bool
	}{{store.KindSecret, sec.Id, false}, {store.KindNode, n.Id, false}, {store.KindSecret, sec.Id, true}}
	for i, w := range want {
		b := <-ch
		// Index and data keys change in the same revisions but are not
		// objects: one event per batch here.
		if b.Err != nil || len(b.Events) != 1 {
			t.Fatalf("batch %d: %+v", i, b)
		}
		e := b.Events[0]
		if e.Kind != w.kind || e.ID != w.id || e.Deleted != w.deleted {
			t.Fatalf("batch %d: %v %s deleted=%v, want %v %s %v", i, e.Kind, e.ID, e.Deleted, w.kind, w.id, w.deleted)
		}
		if e.Kind == store.KindSecret && e.Secret.GetSpec().GetName() != "w" {
			t.Fatalf("batch %d: secret not decoded: %+v", i, e)
		}
	}
}
