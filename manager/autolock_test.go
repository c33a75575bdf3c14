//go:build linux

package manager

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/etcd/etcdtest"
	"github.com/lockbox-project/lockbox/manager/keys"
)

func unlockKeyOf(t *testing.T, m *testManager) string {
	t.Helper()
	key := regexp.MustCompile(`LBXKEY-1-\S+`).FindString(m.out.String())
	if key == "" {
		t.Fatalf("no unlock key printed: %q", m.out.String())
	}
	return key
}

// keyNeedles are the forms the manager's TLS key (as served, in memory)
// would take in a file: SEC 1 and PKCS #8 DER, and the bare scalar.
func keyNeedles(t *testing.T, m *testManager) map[string][]byte {
	t.Helper()
	own := m.own.Load()
	if own == nil {
		t.Fatal("no certificate served")
	}
	k, ok := own.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		t.Fatalf("key of type %T", own.PrivateKey)
	}
	sec1, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := k.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		"PEM private key header": []byte("PRIVATE KEY"),
		"node key (SEC 1 DER)":   sec1,
		"node key (PKCS #8 DER)": pkcs8,
		"node key (scalar)":      raw,
	}
}

// scanForKeys fails the test for every file under dir that holds a needle.
func scanForKeys(t *testing.T, dir string, needles map[string][]byte) {
	t.Helper()
	files := 0
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		files++
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for what, needle := range needles {
			if bytes.Contains(b, needle) {
				t.Errorf("%s found in %s", what, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 5 {
		t.Fatalf("scanned only %d files", files)
	}
}

// Under autolock no file of the data dir holds a private key in clear,
// after init and after a restart and unlock; an unlock-key rotation
// re-seals the key file under the new key.
func TestAutolockLeavesNoKeyInClear(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, "127.0.0.1")
	cfg.Autolock = true
	m := startManager(t, cfg)
	key := unlockKeyOf(t, m)
	createSecret(t, m.admin(), "s", "data")
	scanForKeys(t, cfg.DataDir, keyNeedles(t, m))
	if _, err := os.Stat(filepath.Join(cfg.DataDir, certsDir, nodeKeyFile)); !os.IsNotExist(err) {
		t.Fatalf("plain node key on disk: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, adminDir, adminKeyFile)); !os.IsNotExist(err) {
		t.Fatalf("admin key on disk: %v", err)
	}

	// Rotation re-seals under the new key.
	r, err := m.admin().GetUnlockKey(ctx, &adminapi.GetUnlockKeyRequest{Rotate: true})
	if err != nil {
		t.Fatal(err)
	}
	newKEK, err := keys.KEKFromUnlockKey(r.UnlockKey)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := os.ReadFile(filepath.Join(cfg.DataDir, certsDir, sealedKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := keys.SealedFileKEKID(sealed); !ok || id != newKEK.ID() {
		t.Fatal("the key file was not re-sealed under the rotated unlock key")
	}
	m.stop()

	cfg.ListenAddr = m.Addr()
	m = startManager(t, cfg)
	if _, err := m.admin().Unlock(ctx, &adminapi.UnlockRequest{UnlockKey: key}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("the rotated-out key: %v", err)
	}
	if _, err := m.admin().Unlock(ctx, &adminapi.UnlockRequest{UnlockKey: r.UnlockKey}); err != nil {
		t.Fatal(err)
	}
	createSecret(t, m.admin(), "s2", "data")
	scanForKeys(t, cfg.DataDir, keyNeedles(t, m))
}

// A copy of a locked manager's data dir, started elsewhere, serves
// nothing and hands out no key without the unlock key.
func TestAutolockDataDirCopyIsUseless(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, "127.0.0.1")
	cfg.Autolock = true
	m := startManager(t, cfg)
	key := unlockKeyOf(t, m)
	createSecret(t, m.admin(), "s", "data")
	needles := keyNeedles(t, m)
	m.stop()

	stolen := testConfig(t, "127.0.0.2")
	if out, err := exec.Command("cp", "-a", cfg.DataDir, stolen.DataDir).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	scanForKeys(t, stolen.DataDir, needles)
	c := startManager(t, stolen)
	if c.Addr() != "" {
		t.Fatalf("the copy listens on %s", c.Addr())
	}
	adm := c.admin()
	for name, call := range map[string]func() error{
		"ListSecrets":  func() error { _, err := adm.ListSecrets(ctx, &adminapi.ListSecretsRequest{}); return err },
		"GetUnlockKey": func() error { _, err := adm.GetUnlockKey(ctx, &adminapi.GetUnlockKeyRequest{}); return err },
		"GetJoinToken": func() error {
			_, err := adm.GetJoinToken(ctx, &adminapi.GetJoinTokenRequest{Role: types.NodeRole_NODE_ROLE_MANAGER})
			return err
		},
	} {
		if err := call(); status.Code(err) != codes.FailedPrecondition {
			t.Errorf("%s on the copy: %v", name, err)
		}
	}
	other, _ := keys.NewUnlockKey()
	if _, err := adm.Unlock(ctx, &adminapi.UnlockRequest{UnlockKey: other}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("another cluster's unlock key: %v", err)
	}
	if c.Addr() != "" || c.store != nil {
		t.Fatal("the copy started serving without the unlock key")
	}
	_ = key
}

// A manager joining an autolocked cluster waits for the unlock key before
// its key reaches the disk, then seals it; its etcd peer key (a memfd)
// works for the peer handshakes both ways.
func TestAutolockJoin(t *testing.T) {
	ctx := context.Background()
	cfg1 := testConfig(t, "127.0.0.1")
	cfg1.Autolock = true
	m1 := startManager(t, cfg1)
	key := unlockKeyOf(t, m1)
	createSecret(t, m1.admin(), "s", "data")

	cfg2 := testConfig(t, "127.0.0.2")
	cfg2.JoinAddr = m1.Addr()
	cfg2.JoinToken = []byte(token(t, m1.admin(), types.NodeRole_NODE_ROLE_MANAGER, false))
	m2 := startManager(t, cfg2)
	if _, err := m2.admin().ListSecrets(ctx, &adminapi.ListSecretsRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("joiner served before its unlock: %v", err)
	}
	if _, err := m2.admin().Unlock(ctx, &adminapi.UnlockRequest{UnlockKey: key}); err != nil {
		t.Fatal(err)
	}
	r, err := m2.admin().ListSecrets(ctx, &adminapi.ListSecretsRequest{})
	if err != nil || len(r.Secrets) != 1 {
		t.Fatalf("joiner after unlock: %v %v", r, err)
	}
	if m2.member.IsLearner() {
		t.Fatal("joiner is still a learner")
	}
	scanForKeys(t, cfg2.DataDir, keyNeedles(t, m2))

	// An unlock-key rotation on m1 reaches m2, which re-seals its file.
	rot, err := m1.admin().GetUnlockKey(ctx, &adminapi.GetUnlockKeyRequest{Rotate: true})
	if err != nil {
		t.Fatal(err)
	}
	newKEK, _ := keys.KEKFromUnlockKey(rot.UnlockKey)
	waitFor(t, "the joiner re-seals under the rotated key", func() bool {
		sealed, err := os.ReadFile(filepath.Join(cfg2.DataDir, certsDir, sealedKeyFile))
		id, ok := keys.SealedFileKEKID(sealed)
		return err == nil && ok && id == newKEK.ID()
	})
}

// waitFor polls cond (what it waits for is another manager's watch, with
// no channel to wait on) for up to 20 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(20 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting: %s", what)
		}
	}
}

// Without autolock the key-encryption key can be rotated: the manager's
// kek file is replaced, and the manager restarts with it.
func TestKEKRotationWithoutAutolock(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, "127.0.0.1")
	cfg.forwardTTL = 100 * time.Millisecond
	m := startManager(t, cfg)
	createSecret(t, m.admin(), "s", "data")
	kekPath := filepath.Join(cfg.DataDir, "kek")
	before, err := keys.LoadKeyFile(kekPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.admin().RotateKeyEncryptionKey(ctx, &adminapi.RotateKeyEncryptionKeyRequest{}); err != nil {
		t.Fatal(err)
	}
	after, err := keys.LoadKeyFile(kekPath)
	if err != nil {
		t.Fatal(err)
	}
	if after.ID() == before.ID() {
		t.Fatal("the kek file was not replaced")
	}
	// The forward from the old key is dropped after a while.
	probe := keys.NewManager(m.store.Keyring())
	defer probe.Close()
	waitFor(t, "the forward from the old KEK is dropped", func() bool {
		return errors.Is(probe.UnlockFollowing(ctx, before), keys.ErrWrongKey)
	})
	m.stop()
	cfg.ListenAddr = m.Addr()
	m = startManager(t, cfg)
	if r, err := m.admin().ListSecrets(ctx, &adminapi.ListSecretsRequest{}); err != nil || len(r.Secrets) != 1 {
		t.Fatalf("after the KEK rotation and a restart: %v %v", r, err)
	}
	if _, err := m.admin().GetUnlockKey(ctx, &adminapi.GetUnlockKeyRequest{Rotate: true}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("unlock-key --rotate without autolock: %v", err)
	}
}

// A manager that was down while the unlock key was rotated has its files
// sealed under the old key: the old key opens them (and no more), the
// current one then opens the keyring and the files are re-sealed under it.
func TestAutolockRotatedWhileDown(t *testing.T) {
	ctx := context.Background()
	ext := etcdtest.Start(t)
	cfg1 := testConfig(t, "127.0.0.1")
	cfg1.Autolock, cfg1.EtcdEndpoints = true, []string{ext.Endpoint}
	m1 := startManager(t, cfg1)
	oldKey := unlockKeyOf(t, m1)
	cfg2 := testConfig(t, "127.0.0.2")
	cfg2.EtcdEndpoints = []string{ext.Endpoint}
	cfg2.JoinAddr = m1.Addr()
	cfg2.JoinToken = []byte(token(t, m1.admin(), types.NodeRole_NODE_ROLE_MANAGER, false))
	m2 := startManager(t, cfg2)
	if _, err := m2.admin().Unlock(ctx, &adminapi.UnlockRequest{UnlockKey: oldKey}); err != nil {
		t.Fatal(err)
	}
	m2.stop()
	rot, err := m1.admin().GetUnlockKey(ctx, &adminapi.GetUnlockKeyRequest{Rotate: true})
	if err != nil {
		t.Fatal(err)
	}

	cfg2.JoinAddr, cfg2.JoinToken, cfg2.ListenAddr = "", nil, m2.Addr()
	m2 = startManager(t, cfg2)
	adm := m2.admin()
	if _, err := adm.Unlock(ctx, &adminapi.UnlockRequest{UnlockKey: rot.UnlockKey}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("current key on files sealed under the old one: %v", err)
	}
	if _, err := adm.Unlock(ctx, &adminapi.UnlockRequest{UnlockKey: oldKey}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("old key: %v", err)
	}
	if _, err := adm.ListSecrets(ctx, &adminapi.ListSecretsRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("served with the old key alone: %v", err)
	}
	if _, err := adm.Unlock(ctx, &adminapi.UnlockRequest{UnlockKey: rot.UnlockKey}); err != nil {
		t.Fatalf("current key after the old one: %v", err)
	}
	if _, err := adm.ListSecrets(ctx, &adminapi.ListSecretsRequest{}); err != nil {
		t.Fatal(err)
	}
	newKEK, _ := keys.KEKFromUnlockKey(rot.UnlockKey)
	sealed, err := os.ReadFile(filepath.Join(cfg2.DataDir, certsDir, sealedKeyFile))
	if id, ok := keys.SealedFileKEKID(sealed); err != nil || !ok || id != newKEK.ID() {
		t.Fatalf("files not re-sealed under the current key: %v", err)
	}
}

// A data dir written by a version that left the node key and an admin key
// in clear under autolock: after the unlock the node key is sealed and the
// clear file removed, and the admin certificate is revoked and removed.
func TestAutolockSealsKeysLeftInClear(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, "127.0.0.1")
	cfg.Autolock = true
	m := startManager(t, cfg)
	key := unlockKeyOf(t, m)
	creds, err := m.admin().IssueAdminCredentials(ctx, &adminapi.IssueAdminCredentialsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	root := m.rootPEM()
	addr := m.Addr()
	m.stop()

	// The old layout: certs/node.key and admin/{cert,key}.pem in clear.
	kek, _ := keys.KEKFromUnlockKey(key)
	sealedPath := filepath.Join(cfg.DataDir, certsDir, sealedKeyFile)
	sealed, err := os.ReadFile(sealedPath)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := keys.OpenFile(kek, nodeKeyRole, sealed)
	if err != nil {
		t.Fatal(err)
	}
	for path, data := range map[string][]byte{
		filepath.Join(cfg.DataDir, certsDir, nodeKeyFile):   plain,
		filepath.Join(cfg.DataDir, adminDir, adminCertFile): creds.CertificatePem,
		filepath.Join(cfg.DataDir, adminDir, adminKeyFile):  creds.KeyPem,
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(sealedPath); err != nil {
		t.Fatal(err)
	}

	cfg.ListenAddr = addr
	m = startManager(t, cfg)
	if _, err := m.admin().Unlock(ctx, &adminapi.UnlockRequest{UnlockKey: key}); err != nil {
		t.Fatal(err)
	}
	scanForKeys(t, cfg.DataDir, keyNeedles(t, m))
	if sealed, err := os.ReadFile(sealedPath); err != nil {
		t.Fatalf("the clear key was not sealed: %v", err)
	} else if id, ok := keys.SealedFileKEKID(sealed); !ok || id != kek.ID() {
		t.Fatal("sealed under another key")
	}
	pair, err := tls.X509KeyPair(creds.CertificatePem, creds.KeyPem)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adminapi.NewAdminClient(dialTLS(t, m.Addr(), root, pair)).ListSecrets(ctx, &adminapi.ListSecretsRequest{}); err == nil {
		t.Fatal("the admin certificate left in clear is still accepted")
	}
}

// A renewal under autolock writes the new key sealed, and etcd's memfd
// holds the new key from then on (etcd re-reads it at each handshake).
func TestAutolockRenewalWritesSealed(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, "127.0.0.1")
	cfg.Autolock = true
	m := startManager(t, cfg)
	sealedPath := filepath.Join(cfg.DataDir, certsDir, sealedKeyFile)
	before, err := os.ReadFile(sealedPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.renewOwnCert(ctx, time.Now().Add(70*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(sealedPath)
	if err != nil || bytes.Equal(before, after) {
		t.Fatalf("sealed key file not rewritten: %v", err)
	}
	files, err := m.nodeKey.etcdFiles()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(files.KeyFile, "/proc/self/fd/") {
		t.Fatalf("etcd reads its key from %s", files.KeyFile)
	}
	inMemfd, err := os.ReadFile(files.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := os.ReadFile(files.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(certPEM, inMemfd); err != nil {
		t.Fatalf("etcd's memfd does not hold the renewed certificate's key: %v", err)
	}
	scanForKeys(t, cfg.DataDir, keyNeedles(t, m))
}
