package keys

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/lockbox-project/lockbox/manager/etcd/etcdtest"
	"github.com/lockbox-project/lockbox/manager/store"
)

// TestNoKeyInClearOnDisk bootstraps an autolock keyring on a real etcd,
// rotates the data key, stops etcd and reads every file it wrote: no data
// key, digest key, KEK or unlock key may appear in clear.
func TestNoKeyInClearOnDisk(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	srv := etcdtest.StartIn(t, dir)
	m := NewManager(store.New(srv.Client(), nil).Keyring())
	defer m.Close()
	unlockKey, err := NewUnlockKey()
	if err != nil {
		t.Fatal(err)
	}
	kek, err := KEKFromUnlockKey(unlockKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Bootstrap(ctx, kek, unlockKey); err != nil {
		t.Fatal(err)
	}
	if _, err := m.RotateDEK(ctx); err != nil { // nothing sealed: no resealer needed
		t.Fatal(err)
	}
	if err := m.RotateKEK(ctx, kek, unlockKey); err != nil {
		t.Fatal(err)
	}
	var secrets [][]byte
	m.mu.RLock()
	for _, d := range m.ring.deks {
		secrets = append(secrets, bytes.Clone(d[:]))
	}
	secrets = append(secrets, bytes.Clone(m.ring.macKey[:]), bytes.Clone(kek.k[:]), []byte(unlockKey[9:]))
	m.mu.RUnlock()
	srv.Close()

	files := 0
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for i, s := range secrets {
			if bytes.Contains(b, s[:16]) {
				t.Errorf("key material %d in clear in %s", i, path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatal("etcd wrote no files")
	}
}
