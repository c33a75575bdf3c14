package keys_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/etcd/etcdtest"
	"github.com/lockbox-project/lockbox/manager/keys"
	"github.com/lockbox-project/lockbox/manager/store"
)

// cluster is one etcd shared by two managers, as in an HA control plane.
type cluster struct {
	db   *store.Store // no sealer: raw keys and the keyring record
	a, b *keys.Manager
	sa   *store.Store
	sb   *store.Store
}

func newCluster(t *testing.T) *cluster {
	srv := etcdtest.Start(t)
	db := store.New(srv.Client(), nil)
	c := &cluster{db: db, a: keys.NewManager(db.Keyring()), b: keys.NewManager(db.Keyring())}
	c.sa = db.WithSealer(c.a)
	c.sb = db.WithSealer(c.b)
	t.Cleanup(c.a.Close)
	t.Cleanup(c.b.Close)
	return c
}

func TestBootstrapUnlockAndShare(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	if _, err := c.sa.CreateSecret(ctx, &types.SecretSpec{Name: "early"}, []byte("x")); !errors.Is(err, keys.ErrLocked) {
		t.Fatalf("create while locked: %v", err)
	}
	kek, _ := keys.NewKEK()
	created, err := c.a.Bootstrap(ctx, kek, "")
	if err != nil || !created {
		t.Fatalf("bootstrap: %v %v", created, err)
	}
	// A second bootstrap (another manager starting at once) unlocks.
	if created, err := c.b.Bootstrap(ctx, kek, ""); err != nil || created {
		t.Fatalf("second bootstrap: %v %v", created, err)
	}
	sec, err := c.sa.CreateSecret(ctx, &types.SecretSpec{Name: "db"}, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := c.sb.SecretData(ctx, sec.Id)
	if err != nil || string(data) != "pw" {
		t.Fatalf("other manager reads %q, %v", data, err)
	}
	other, _ := keys.NewKEK()
	m := keys.NewManager(c.db.Keyring())
	if err := m.Unlock(ctx, other); !errors.Is(err, keys.ErrWrongKey) || !m.Locked() {
		t.Fatalf("unlock with wrong KEK: %v", err)
	}
	if _, ok, _ := c.a.UnlockKey(); ok {
		t.Fatal("autolock reported on")
	}
}

func TestAutolockRotateUnlockKey(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	key, _ := keys.NewUnlockKey()
	kek, _ := keys.KEKFromUnlockKey(key)
	if _, err := c.a.Bootstrap(ctx, kek, key); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := c.a.UnlockKey(); err != nil || !ok || got != key {
		t.Fatalf("unlock key %v %v", ok, err)
	}
	sec, err := c.sa.CreateSecret(ctx, &types.SecretSpec{Name: "db"}, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	newKey, err := c.a.RotateUnlockKey(ctx)
	if err != nil || newKey == key {
		t.Fatalf("rotate: %v", err)
	}
	// A restarted manager: the old key no longer unlocks, the new one does.
	if err := c.b.UnlockWithKey(ctx, key); !errors.Is(err, keys.ErrWrongKey) {
		t.Fatalf("old unlock key: %v", err)
	}
	if err := c.b.UnlockWithKey(ctx, newKey); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := c.b.UnlockKey(); got != newKey {
		t.Fatal("unlock key not carried in the keyring")
	}
	data, err := c.sb.SecretData(ctx, sec.Id)
	if err != nil || string(data) != "pw" {
		t.Fatalf("after unlock-key rotation: %q, %v", data, err)
	}
}

func TestRotateDEK(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	kek, _ := keys.NewKEK()
	if _, err := c.a.Bootstrap(ctx, kek, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.b.Unlock(ctx, kek); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 30 {
		sec, err := c.sa.CreateSecret(ctx, &types.SecretSpec{Name: fmt.Sprintf("s%d", i)}, fmt.Appendf(nil, "data-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, sec.Id)
	}
	// A value another package sealed and re-seals itself (like
	// manager/ca's key and join tokens), bound to its own record.
	other := &blobResealer{db: c.db, sealer: c.a, key: "/lockbox/test-sealed", ad: []byte("test-sealed")}
	sealed, err := c.a.SealRecord([]byte("token-secret"), other.ad)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.db.Client().Put(ctx, other.key, string(sealed)); err != nil {
		t.Fatal(err)
	}
	before := rawData(t, c.db, ids[0])
	n, err := c.a.RotateDEK(ctx, c.sa, other)
	if err != nil || n != 31 {
		t.Fatalf("rotate: %d, %v", n, err)
	}
	after := rawData(t, c.db, ids[0])
	if resp, err := c.db.Client().Get(ctx, other.key); err != nil || len(resp.Kvs) != 1 {
		t.Fatal(err)
	} else if p, err := c.a.OpenRecord(resp.Kvs[0].Value, other.ad); err != nil || string(p) != "token-secret" {
		t.Fatalf("other sealed value after rotation: %q %v", p, err)
	}
	if bytes.Equal(before[:5], after[:5]) {
		t.Fatal("key ID unchanged after rotation")
	}
	// Manager b still has the old ring; it must reload to read.
	if _, err := c.sb.SecretData(ctx, ids[0]); !errors.Is(err, keys.ErrUnknownKey) {
		t.Fatalf("stale manager: %v", err)
	}
	if err := c.b.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		data, err := c.sb.SecretData(ctx, id)
		if err != nil || string(data) != fmt.Sprintf("data-%d", i) {
			t.Fatalf("secret %d after rotation: %q, %v", i, data, err)
		}
	}
	// Crash-safety: a rotation interrupted after step 1 (new key written,
	// nothing re-sealed) leaves every secret readable, and FinishRotation
	// completes it on a freshly unlocked manager.
	if _, err := c.a.RotateDEK(ctx, failingResealer{}); err == nil {
		t.Fatal("rotation with failing resealer succeeded")
	}
	fresh := keys.NewManager(c.db.Keyring())
	defer fresh.Close()
	if err := fresh.Unlock(ctx, kek); err != nil {
		t.Fatal(err)
	}
	fs := c.db.WithSealer(fresh)
	if data, err := fs.SecretData(ctx, ids[3]); err != nil || string(data) != "data-3" {
		t.Fatalf("mid-rotation read: %q %v", data, err)
	}
	n, err = fresh.FinishRotation(ctx, fs)
	if err != nil || n != 30 {
		t.Fatalf("finish rotation: %d, %v", n, err)
	}
	if data, err := fs.SecretData(ctx, ids[29]); err != nil || string(data) != "data-29" {
		t.Fatalf("after finish: %q %v", data, err)
	}
}

// blobResealer re-seals one raw etcd key holding one value sealed for ad.
type blobResealer struct {
	db     *store.Store
	sealer *keys.Manager
	key    string
	ad     []byte
}

func (r *blobResealer) Reseal(ctx context.Context, needs func([]byte) bool) (int, error) {
	resp, err := r.db.Client().Get(ctx, r.key)
	if err != nil || len(resp.Kvs) == 0 || !needs(resp.Kvs[0].Value) {
		return 0, err
	}
	plain, err := r.sealer.OpenRecord(resp.Kvs[0].Value, r.ad)
	if err != nil {
		return 0, err
	}
	defer clear(plain)
	sealed, err := r.sealer.SealRecord(plain, r.ad)
	if err != nil {
		return 0, err
	}
	_, err = r.db.Client().Put(ctx, r.key, string(sealed))
	return 1, err
}

type failingResealer struct{}

func (failingResealer) Reseal(context.Context, func([]byte) bool) (int, error) {
	return 0, errors.New("simulated crash")
}

func rawData(t *testing.T, db *store.Store, id string) []byte {
	t.Helper()
	resp, err := db.Client().Get(context.Background(), store.DefaultPrefix+"secretdata/"+id)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("raw data of %s: %v", id, err)
	}
	return resp.Kvs[0].Value
}

func TestWatchKeyringReloads(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newCluster(t)
	kek, _ := keys.NewKEK()
	if _, err := c.a.Bootstrap(ctx, kek, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.b.Unlock(ctx, kek); err != nil {
		t.Fatal(err)
	}
	sec, _ := c.sa.CreateSecret(ctx, &types.SecretSpec{Name: "w"}, []byte("v"))
	// Rotate before the watch starts: it must still catch up.
	if _, err := c.a.RotateDEK(ctx, c.sa); err != nil {
		t.Fatal(err)
	}
	reloads := make(chan error, 8)
	done := make(chan struct{})
	go func() { c.b.WatchKeyring(ctx, func(err error) { reloads <- err }); close(done) }()
	for err := range reloads {
		if err != nil {
			t.Fatal(err)
		}
		if data, err := c.sb.SecretData(ctx, sec.Id); err == nil && string(data) == "v" {
			break
		}
	}
	cancel()
	<-done
}

// TestSealDuringRotation seals and opens from several goroutines while the
// data key rotates, under the race detector: swapping rings never makes a
// seal fail or an open see a half-zeroed key. (An open may find its key
// dropped if the rotation ran between its seal and its open; stored data
// is protected from that by the store's fence.)
func TestSealDuringRotation(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	kek, _ := keys.NewKEK()
	if _, err := c.a.Bootstrap(ctx, kek, ""); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := c.sa.CreateSecret(ctx, &types.SecretSpec{Name: fmt.Sprintf("r%d", i)}, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			for {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				s, err := c.a.Seal([]byte("payload"))
				if err == nil {
					var p []byte
					p, err = c.a.Open(s)
					if errors.Is(err, keys.ErrUnknownKey) {
						err = nil
					} else if err == nil && string(p) != "payload" {
						err = fmt.Errorf("opened %q", p)
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for range 3 {
		if _, err := c.a.RotateDEK(ctx, c.sa); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestStaleManagerWriteIsFenced: manager b has not seen a rotation that
// already dropped the key it seals with. Its create must not store data
// under that key; the fence makes it reload and seal again.
func TestStaleManagerWriteIsFenced(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	kek, _ := keys.NewKEK()
	if _, err := c.a.Bootstrap(ctx, kek, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.b.Unlock(ctx, kek); err != nil {
		t.Fatal(err)
	}
	if _, err := c.a.RotateDEK(ctx, c.sa); err != nil {
		t.Fatal(err)
	}
	// b still holds the old ring (no WatchKeyring running).
	sec, err := c.sb.CreateSecret(ctx, &types.SecretSpec{Name: "late"}, []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := c.sa.SecretData(ctx, sec.Id)
	if err != nil || string(data) != "v" {
		t.Fatalf("secret written by the stale manager: %q, %v", data, err)
	}
}

// A running manager follows an unlock-key rotation made on another one
// (through the forward the rotation leaves) and hears the new KEK, to
// re-seal its key files; a later keyring write drops the forward.
func TestRunningManagerFollowsUnlockKeyRotation(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	key, _ := keys.NewUnlockKey()
	kek, _ := keys.KEKFromUnlockKey(key)
	if _, err := c.a.Bootstrap(ctx, kek, key); err != nil {
		t.Fatal(err)
	}
	heard := make(chan [8]byte, 4)
	c.b.OnKEKChange(func(k *keys.KEK) { heard <- k.ID(); k.Zero() })
	if err := c.b.Unlock(ctx, kek); err != nil {
		t.Fatal(err)
	}
	if got := <-heard; got != kek.ID() {
		t.Fatal("unlock did not report the KEK")
	}
	newKey, err := c.a.RotateUnlockKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.b.Reload(ctx); err != nil {
		t.Fatalf("reload after a rotation elsewhere: %v", err)
	}
	newKEK, _ := keys.KEKFromUnlockKey(newKey)
	select {
	case got := <-heard:
		if got != newKEK.ID() {
			t.Fatal("followed to a KEK that is not the new unlock key's")
		}
	default:
		t.Fatal("the new KEK was not reported")
	}
	if got, _, _ := c.b.UnlockKey(); got != newKey {
		t.Fatal("the follower does not hold the new unlock key")
	}
	// The follower writes under the new KEK: a data-key rotation there
	// leaves a keyring the new key opens, with no forward from the old one.
	if _, err := c.b.RotateDEK(ctx); err != nil {
		t.Fatal(err)
	}
	fresh := keys.NewManager(c.db.Keyring())
	defer fresh.Close()
	if err := fresh.UnlockWithKey(ctx, key); !errors.Is(err, keys.ErrWrongKey) {
		t.Fatalf("old key after rotation: %v", err)
	}
	if err := fresh.UnlockWithKey(ctx, newKey); err != nil {
		t.Fatal(err)
	}
}

// Without autolock the KEK (a key file) can be rotated too: running
// managers follow through the forward, a manager that was down follows at
// its next unlock from the old file, until a later keyring write drops the
// forward; a cluster with autolock is told to rotate its unlock key.
func TestRotateKeyFileKEK(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	kek, _ := keys.NewKEK()
	if _, err := c.a.Bootstrap(ctx, kek, ""); err != nil {
		t.Fatal(err)
	}
	heard := make(chan [8]byte, 4)
	c.b.OnKEKChange(func(k *keys.KEK) { heard <- k.ID(); k.Zero() })
	if err := c.b.Unlock(ctx, kek); err != nil {
		t.Fatal(err)
	}
	<-heard
	sec, err := c.sa.CreateSecret(ctx, &types.SecretSpec{Name: "db"}, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.a.RotateKeyFileKEK(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.b.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	var next [8]byte
	select {
	case next = <-heard:
	default:
		t.Fatal("the follower heard no new KEK")
	}
	if next == kek.ID() {
		t.Fatal("the KEK did not change")
	}
	down := keys.NewManager(c.db.Keyring())
	defer down.Close()
	if err := down.Unlock(ctx, kek); !errors.Is(err, keys.ErrWrongKey) {
		t.Fatalf("strict unlock with the old key file: %v", err)
	}
	if err := down.UnlockFollowing(ctx, kek); err != nil {
		t.Fatalf("a manager down during the rotation: %v", err)
	}
	if data, err := c.db.WithSealer(down).SecretData(ctx, sec.Id); err != nil || string(data) != "pw" {
		t.Fatalf("after the KEK rotation: %q %v", data, err)
	}
	if _, err := c.a.RotateDEK(ctx, c.sa); err != nil {
		t.Fatal(err)
	}
	late := keys.NewManager(c.db.Keyring())
	defer late.Close()
	if err := late.UnlockFollowing(ctx, kek); !errors.Is(err, keys.ErrWrongKey) {
		t.Fatalf("the old key file after the forward was dropped: %v", err)
	}

	al := newCluster(t)
	key, _ := keys.NewUnlockKey()
	akek, _ := keys.KEKFromUnlockKey(key)
	if _, err := al.a.Bootstrap(ctx, akek, key); err != nil {
		t.Fatal(err)
	}
	if err := al.a.RotateKeyFileKEK(ctx); !errors.Is(err, keys.ErrAutolock) {
		t.Fatalf("key-file rotation on an autolocked cluster: %v", err)
	}
}

// DropForward ends the window in which the previous key leads to the
// current one.
func TestDropForward(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	kek, _ := keys.NewKEK()
	if _, err := c.a.Bootstrap(ctx, kek, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.a.DropForward(ctx); err != nil {
		t.Fatalf("no forward: %v", err)
	}
	if err := c.a.RotateKeyFileKEK(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.a.DropForward(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.b.UnlockFollowing(ctx, kek); !errors.Is(err, keys.ErrWrongKey) {
		t.Fatalf("the previous key after the forward was dropped: %v", err)
	}
	sec, err := c.sa.CreateSecret(ctx, &types.SecretSpec{Name: "db"}, []byte("pw"))
	if err != nil {
		t.Fatalf("the rotating manager after dropping the forward: %v", err)
	}
	if data, err := c.sa.SecretData(ctx, sec.Id); err != nil || string(data) != "pw" {
		t.Fatalf("%q %v", data, err)
	}
}

// TestRotationWaitsForItsKEKToBeHeard: an unlock-key rotation answers
// only once OnKEKChange has heard the new KEK (the daemon re-seals its key
// files there), even when the manager's own keyring watch installed the
// new ring first and is still telling OnKEKChange of it. Before, the
// rotation then answered at once, and a key file read right after was
// still sealed under the old key (TestAutolockLeavesNoKeyInClear failed so
// in a fresh-clone CI run).
func TestRotationWaitsForItsKEKToBeHeard(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newCluster(t)
	var mu sync.Mutex
	var heard [8]byte
	c.a.OnKEKChange(func(k *keys.KEK) {
		// A slow listener, as a re-seal that writes and syncs a file is.
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		heard = k.ID()
		mu.Unlock()
		k.Zero()
	})
	key, _ := keys.NewUnlockKey()
	kek, _ := keys.KEKFromUnlockKey(key)
	if _, err := c.a.Bootstrap(ctx, kek, key); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { c.a.WatchKeyring(ctx, nil); close(done) }()
	for i := range 15 {
		newKey, err := c.a.RotateUnlockKey(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := keys.KEKFromUnlockKey(newKey)
		mu.Lock()
		got := heard
		mu.Unlock()
		if got != want.ID() {
			t.Fatalf("rotation %d answered before its new KEK was heard", i)
		}
	}
	cancel()
	<-done
}
