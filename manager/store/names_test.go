package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/internal/identity"
	"github.com/lockbox-project/lockbox/manager/store"
)

// TestNamesWithoutCase: swarm's name index is strings.ToLower(name)
// (swarmkit manager/state/store/secrets.go CreateSecret: "Ensure the name
// is not already in use" looks up strings.ToLower(name)), so "DB_pw" is
// refused next to "db_pw" and a lookup by name finds either spelling.
func TestNamesWithoutCase(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	sec, err := s.CreateSecret(ctx, secretSpec("db_pw"), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateService(ctx, serviceSpec("Web", "db_pw")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		create func() error
		want   string
	}{
		{"secret, other case", func() error { _, err := s.CreateSecret(ctx, secretSpec("DB_pw"), []byte("y")); return err },
			"secret 'DB_pw' already exists: names compare without regard to case, as in swarm, and secret 'db_pw' has this one"},
		{"secret, same case", func() error { _, err := s.CreateSecret(ctx, secretSpec("db_pw"), []byte("y")); return err },
			"secret 'db_pw' already exists"},
		{"service, other case", func() error { _, err := s.CreateService(ctx, serviceSpec("web", "db_pw")); return err },
			"service 'web' already exists: names compare without regard to case, as in swarm, and service 'Web' has this one"},
		{"service, same case", func() error { _, err := s.CreateService(ctx, serviceSpec("Web", "db_pw")); return err },
			"service 'Web' already exists"},
	}
	for _, tt := range tests {
		err := tt.create()
		if !errors.Is(err, store.ErrNameConflict) || err.Error() != tt.want {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
	for _, ref := range []string{"db_pw", "DB_PW", "Db_Pw"} {
		got, err := s.GetSecret(ctx, ref)
		if err != nil || got.Id != sec.Id {
			t.Errorf("GetSecret(%q) = %v, %v", ref, got, err)
		}
	}
	if got, err := s.GetService(ctx, "WEB"); err != nil || got.Spec.Name != "Web" {
		t.Errorf("GetService(WEB) = %v, %v", got, err)
	}
	// Removing frees the name in every case.
	if err := s.RemoveService(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateService(ctx, serviceSpec("WEB", "db_pw")); err != nil {
		t.Fatalf("create after rm: %v", err)
	}
	if err := s.RemoveService(ctx, "WEB"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveSecret(ctx, "DB_PW"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateSecret(ctx, secretSpec("DB_pw"), []byte("y")); err != nil {
		t.Fatalf("create after rm: %v", err)
	}
}

// TestNamesWithoutCaseLegacy: secrets recorded before the folded index
// (two of them differing only in case, which the old rule allowed) stay
// reachable by their exact names, are brought into the index on the next
// create, and a new third spelling is refused.
func TestNamesWithoutCaseLegacy(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	cli, p := s.Client(), s.Prefix()
	ids := map[string]string{}
	for _, name := range []string{"db_pw", "DB_pw"} {
		id := identity.NewID()
		ids[name] = id
		val, err := proto.Marshal(&types.Secret{Id: id, Meta: &types.Meta{}, Spec: secretSpec(name), Size: 1})
		if err != nil {
			t.Fatal(err)
		}
		// The layout before the folded index: object and exact name only.
		if _, err := cli.Put(ctx, p+"secrets/"+id, string(val)); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, p+"names/secrets/"+name, id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.CreateSecret(ctx, secretSpec("Db_Pw"), []byte("z")); err == nil || !strings.Contains(err.Error(), "without regard to case") {
		t.Fatalf("third spelling: %v", err)
	}
	for name, id := range ids {
		if got, err := s.GetSecret(ctx, name); err != nil || got.Id != id {
			t.Errorf("GetSecret(%q) = %v, %v; want %s", name, got, err, id)
		}
	}
	// Removing the one that does not hold the folded entry leaves the
	// other's entry in place.
	holder, err := cli.Get(ctx, p+"names/secrets-nocase/db_pw")
	if err != nil || len(holder.Kvs) != 1 {
		t.Fatalf("folded entry: %v %v", holder, err)
	}
	other := ids["db_pw"]
	if string(holder.Kvs[0].Value) == other {
		other = ids["DB_pw"]
	}
	if err := s.RemoveSecret(ctx, other); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateSecret(ctx, secretSpec("DB_PW"), []byte("z")); err == nil {
		t.Fatal("the surviving legacy secret's name was freed")
	}
}

// TestNamesWithoutCaseAfterRestore: a store that has backfilled once
// (and cached it) still refuses a case variant after its data is replaced
// by an older backup without the folded index: the create's own compare
// on the marker sends it back to the backfill.
func TestNamesWithoutCaseAfterRestore(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if _, err := s.CreateSecret(ctx, secretSpec("db_pw"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateService(ctx, serviceSpec("web", "db_pw")); err != nil {
		t.Fatal(err)
	}
	// The "restore": the folded index and its marker gone.
	cli, p := s.Client(), s.Prefix()
	for _, k := range []string{"names/secrets-nocase/", "names/services-nocase/", "names/nocase-indexed"} {
		if _, err := cli.Delete(ctx, p+k, clientv3.WithPrefix()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.CreateSecret(ctx, secretSpec("DB_PW"), []byte("y")); !errors.Is(err, store.ErrNameConflict) {
		t.Fatalf("secret DB_PW after the restore: %v", err)
	}
	if _, err := cli.Delete(ctx, p+"names/nocase-indexed"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateService(ctx, serviceSpec("WEB", "db_pw")); !errors.Is(err, store.ErrNameConflict) {
		t.Fatalf("service WEB after the marker went: %v", err)
	}
}
