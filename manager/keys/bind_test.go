package keys_test

import (
	"context"
	"errors"
	"testing"

	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/keys"
	"github.com/lockbox-project/lockbox/manager/store"
)

// Issue 10 finding 5: a sealed value copied over another record in etcd
// (secret A's sealed data put at secret B's key) must not be opened and
// served as B. Before values were bound to their records it was: reading
// B returned A's data.
func TestSealedValueCannotMoveToAnotherRecord(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	kek, _ := keys.NewKEK()
	if _, err := c.a.Bootstrap(ctx, kek, ""); err != nil {
		t.Fatal(err)
	}
	a, err := c.sa.CreateSecret(ctx, &types.SecretSpec{Name: "a"}, []byte("alpha: only for service a"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.sa.CreateSecret(ctx, &types.SecretSpec{Name: "b"}, []byte("bravo"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.db.Client().Put(ctx, store.DefaultPrefix+"secretdata/"+b.Id, string(rawData(t, c.db, a.Id))); err != nil {
		t.Fatal(err)
	}
	data, err := c.sa.SecretData(ctx, b.Id)
	if !errors.Is(err, keys.ErrCorrupt) {
		t.Fatalf("secret b with secret a's sealed data: %q, %v; want %v", data, err, keys.ErrCorrupt)
	}
	if data, err := c.sa.SecretData(ctx, a.Id); err != nil || string(data) != "alpha: only for service a" {
		t.Fatalf("secret a: %q %v", data, err)
	}
}

// Values sealed before records were bound (format 0x01) still open; a
// re-seal rewrites them in the bound format, and a data-key rotation
// leaves no old value that could be put back.
func TestOldFormatOpensAndIsResealed(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	kek, _ := keys.NewKEK()
	if _, err := c.a.Bootstrap(ctx, kek, ""); err != nil {
		t.Fatal(err)
	}
	sec, err := c.sa.CreateSecret(ctx, &types.SecretSpec{Name: "old"}, []byte("charlie"))
	if err != nil {
		t.Fatal(err)
	}
	if v := rawData(t, c.db, sec.Id); v[0] != 0x02 || c.a.NeedsReseal(v) {
		t.Fatalf("new value: format %#x, needs reseal %v", v[0], c.a.NeedsReseal(v))
	}
	v1 := c.a.SealV1ForTest([]byte("charlie"))
	key := store.DefaultPrefix + "secretdata/" + sec.Id
	if _, err := c.db.Client().Put(ctx, key, string(v1)); err != nil {
		t.Fatal(err)
	}
	if data, err := c.sa.SecretData(ctx, sec.Id); err != nil || string(data) != "charlie" {
		t.Fatalf("old-format value: %q %v", data, err)
	}
	if !c.a.NeedsReseal(v1) {
		t.Fatal("an old-format value does not need a re-seal")
	}
	// One data key: finishing a rotation re-seals what needs it.
	n, err := c.a.FinishRotation(ctx, c.sa)
	if err != nil || n != 1 {
		t.Fatalf("re-seal: %d, %v", n, err)
	}
	if v := rawData(t, c.db, sec.Id); v[0] != 0x02 || c.a.NeedsReseal(v) {
		t.Fatalf("after re-seal: format %#x", v[0])
	}
	if data, err := c.sa.SecretData(ctx, sec.Id); err != nil || string(data) != "charlie" {
		t.Fatalf("after re-seal: %q %v", data, err)
	}
	// After a rotation the old value, put back, no longer opens.
	if _, err := c.a.RotateDEK(ctx, c.sa); err != nil {
		t.Fatal(err)
	}
	if _, err := c.db.Client().Put(ctx, key, string(v1)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.sa.SecretData(ctx, sec.Id); !errors.Is(err, keys.ErrUnknownKey) {
		t.Fatalf("old-format value after a rotation: %v", err)
	}
}
