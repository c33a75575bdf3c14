package windows

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	winapi "golang.org/x/sys/windows"

	"github.com/lockbox-project/lockbox/mounter"
)

// tempDir is t.TempDir, cleaned with wipeTree: os.RemoveAll's handle-based
// walk fails under wine ("Invalid function"), and hack/test-windows.sh runs
// these tests there.
func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "lockbox-windows-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := wipeTree(dir); err != nil {
			t.Errorf("clean up %s: %v", dir, err)
		}
	})
	return dir
}

// source hands out secrets from a map, and records which it was asked for.
type source struct {
	data  map[string][]byte
	fail  string // a secret ID whose read fails
	asked []string
}

func (s *source) WithSecret(id string, fn func([]byte) error) error {
	s.asked = append(s.asked, id)
	if id == s.fail {
		return fmt.Errorf("secret %s is gone", id)
	}
	d, ok := s.data[id]
	if !ok {
		return fmt.Errorf("no secret %s", id)
	}
	return fn(d)
}

func testSource() *source {
	return &source{data: map[string][]byte{
		"iddb":  []byte("correct horse battery staple"),
		"idapi": bytes.Repeat([]byte{0xa5}, 100<<10),
	}}
}

func testPlan(t *testing.T) *mounter.Plan {
	t.Helper()
	plan, err := mounter.NewPlan(mounter.Windows, []mounter.Grant{
		{SecretID: "iddb", SecretName: "db", Size: 28},
		{SecretID: "idapi", SecretName: "api", Target: `C:\app\conf\api.key`, Size: 100 << 10},
		{SecretID: "iddb", SecretName: "db", Target: `app\db.txt`, Size: 28},
	})
	if err != nil {
		t.Fatal(err)
	}
	return plan
}

func newMounter(t *testing.T) (*Mounter, string) {
	t.Helper()
	state := tempDir(t)
	m, err := New(state)
	if err != nil {
		t.Fatal(err)
	}
	return m, state
}

func build(t *testing.T, m *Mounter) *Mount {
	t.Helper()
	mt, err := m.Build(context.Background(), testPlan(t), testSource())
	if err != nil {
		t.Fatal(err)
	}
	return mt.(*Mount)
}

// tokens lists the mount directories under the state dir.
func tokens(t *testing.T, state string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(state, secretsDirName))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestBuildWritesOneFilePerGrant(t *testing.T) {
	m, state := newMounter(t)
	src := testSource()
	mt, err := m.Build(context.Background(), testPlan(t), src)
	if err != nil {
		t.Fatal(err)
	}
	dir := mt.(*Mount).Source()
	if rel, err := filepath.Rel(filepath.Join(state, secretsDirName), dir); err != nil ||
		!tokenRE.MatchString(filepath.Dir(rel)) || filepath.Base(rel) != filesDirName {
		t.Fatalf("source %s is not <state>\\secrets\\<token>\\files", dir)
	}
	want := map[string][]byte{"iddb": src.data["iddb"], "idapi": src.data["idapi"], "iddb~2": src.data["iddb"]}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(want) {
		t.Fatalf("source holds %d entries, want %d", len(entries), len(want))
	}
	for name, data := range want {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("%s holds %d bytes that differ from the secret's %d", name, len(got), len(data))
		}
	}
	if got := strings.Join(src.asked, ","); got != "iddb,idapi,iddb" {
		t.Errorf("source asked for %s", got)
	}
	if err := mt.Wipe(); err != nil {
		t.Fatal(err)
	}
}

func TestBuildSetsFileAttributes(t *testing.T) {
	m, _ := newMounter(t)
	mt := build(t, m)
	defer mt.Wipe()
	p, _ := winapi.UTF16PtrFromString(filepath.Join(mt.Source(), "iddb"))
	attrs, err := winapi.GetFileAttributes(p)
	if err != nil {
		t.Fatal(err)
	}
	const want = winapi.FILE_ATTRIBUTE_TEMPORARY | winapi.FILE_ATTRIBUTE_NOT_CONTENT_INDEXED
	if attrs&want != want {
		t.Fatalf("attributes %#x, want %#x set", attrs, want)
	}
}

// TestBuildACL reads back the ACL of every directory and file: only
// Administrators and SYSTEM, protected from inheritance. (Wine does not
// keep ACLs: hack/test-windows.sh skips this test.)
func TestBuildACL(t *testing.T) {
	m, state := newMounter(t)
	mt := build(t, m)
	defer mt.Wipe()
	paths := []string{filepath.Join(state, secretsDirName), mt.dir, mt.Source()}
	for _, name := range []string{"iddb", "idapi", "iddb~2"} {
		paths = append(paths, filepath.Join(mt.Source(), name))
	}
	for _, p := range paths {
		sd, err := winapi.GetNamedSecurityInfo(p, winapi.SE_FILE_OBJECT, winapi.DACL_SECURITY_INFORMATION)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkPrivateDACL(sd.String()); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

func TestNewRepairsRootACL(t *testing.T) {
	state := tempDir(t)
	root := filepath.Join(state, secretsDirName)
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := New(state); err != nil {
		t.Fatal(err)
	}
	sd, err := winapi.GetNamedSecurityInfo(root, winapi.SE_FILE_OBJECT, winapi.DACL_SECURITY_INFORMATION)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkPrivateDACL(sd.String()); err != nil {
		t.Fatalf("after New: %v", err)
	}
}

func TestNewRefusesAFileAsRoot(t *testing.T) {
	state := tempDir(t)
	if err := os.WriteFile(filepath.Join(state, secretsDirName), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(state); err == nil || !strings.Contains(err.Error(), "not a plain directory") {
		t.Fatalf("New over a file: %v", err)
	}
	if _, err := New("relative"); err == nil {
		t.Fatal("New accepted a relative state dir")
	}
}

func TestBuildRefusesBadPlans(t *testing.T) {
	m, state := newMounter(t)
	linux, err := mounter.NewPlan(mounter.Linux, []mounter.Grant{{SecretID: "a", SecretName: "a", Size: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Build(context.Background(), linux, testSource()); err == nil || !strings.Contains(err.Error(), "not windows") {
		t.Fatalf("Build(linux plan): %v", err)
	}
	bad := testPlan(t)
	bad.Files[0].Name = `..\..\escape`
	if _, err := m.Build(context.Background(), bad, testSource()); err == nil {
		t.Fatal("Build accepted a file name with separators")
	}
	if n := tokens(t, state); len(n) != 0 {
		t.Fatalf("refused builds left %v", n)
	}
}

func TestBuildFailureLeavesNothing(t *testing.T) {
	m, state := newMounter(t)
	src := testSource()
	src.fail = "idapi"
	if _, err := m.Build(context.Background(), testPlan(t), src); err == nil || !strings.Contains(err.Error(), `secret "api"`) {
		t.Fatalf("Build with a failing source: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Build(ctx, testPlan(t), testSource()); !errors.Is(err, context.Canceled) {
		t.Fatalf("Build with a cancelled context: %v", err)
	}
	if n := tokens(t, state); len(n) != 0 {
		t.Fatalf("failed builds left %v", n)
	}
}

func TestWipe(t *testing.T) {
	m, state := newMounter(t)
	mt := build(t, m)
	if err := mt.Wipe(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(mt.dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after Wipe, %s: %v", mt.dir, err)
	}
	if err := mt.Wipe(); err != nil {
		t.Fatalf("second Wipe: %v", err)
	}
	if err := mt.Attach(context.Background(), mounter.Container{ID: "c1", Rootfs: tempDir(t)}); err == nil {
		t.Fatal("Attach after Wipe succeeded")
	}
	if n := tokens(t, state); len(n) != 0 {
		t.Fatalf("Wipe left %v", n)
	}
}

func TestOverwriteZeroesTheFile(t *testing.T) {
	p := filepath.Join(tempDir(t), "f")
	data := bytes.Repeat([]byte("secret!"), 30000) // more than one wipe block
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := overwrite(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(data) || !bytes.Equal(got, make([]byte, len(data))) {
		t.Fatalf("after overwrite: %d bytes, not all zero", len(got))
	}
	if err := wipeFile(p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after wipeFile: %v", err)
	}
}

func TestAttachMakesParentsAndOwner(t *testing.T) {
	m, _ := newMounter(t)
	mt := build(t, m)
	defer mt.Wipe()
	rootfs := tempDir(t)
	if err := mt.Attach(context.Background(), mounter.Container{ID: "c1", Rootfs: rootfs}); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{`ProgramData\Docker\secrets`, `app\conf`} {
		if fi, err := os.Lstat(filepath.Join(rootfs, dir)); err != nil || !fi.IsDir() {
			t.Errorf("%s in the rootfs: %v", dir, err)
		}
	}
	if id, err := mt.owner(); err != nil || id != "c1" {
		t.Fatalf("owner = %q, %v", id, err)
	}
	if err := mt.Attach(context.Background(), mounter.Container{ID: "c2", Rootfs: rootfs}); err == nil ||
		!strings.Contains(err.Error(), "belongs to container c1") {
		t.Fatalf("Attach to a second container: %v", err)
	}
	if err := mt.Attach(context.Background(), mounter.Container{ID: "c1", Rootfs: "rel"}); err == nil {
		t.Fatal("Attach accepted a relative rootfs")
	}
}

// TestAttachLinks checks the links themselves, with links in the image on
// the way. (Wine 8's CreateSymbolicLinkW reports success and creates
// nothing: hack/test-windows.sh skips this test.)
func TestAttachLinks(t *testing.T) {
	m, _ := newMounter(t)
	mt := build(t, m)
	defer mt.Wipe()
	rootfs := tempDir(t)
	// The image points C:\app at C:\srv, absolutely: a naive join would
	// follow it to the host's C:\srv.
	if err := os.MkdirAll(filepath.Join(rootfs, "srv"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(`C:\srv`, filepath.Join(rootfs, "app")); err != nil {
		t.Fatal(err)
	}
	// A link from an earlier start sits at the default target.
	if err := os.MkdirAll(filepath.Join(rootfs, `ProgramData\Docker\secrets`), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := createFileSymlink(filepath.Join(rootfs, `ProgramData\Docker\secrets\db`), `C:\stale`); err != nil {
		t.Fatal(err)
	}
	if err := mt.Attach(context.Background(), mounter.Container{ID: "c1", Rootfs: rootfs}); err != nil {
		t.Fatal(err)
	}
	for link, want := range map[string]string{
		`ProgramData\Docker\secrets\db`: `C:\ProgramData\Docker\internal\secrets\iddb`,
		`srv\conf\api.key`:              `C:\ProgramData\Docker\internal\secrets\idapi`,
		`srv\db.txt`:                    `C:\ProgramData\Docker\internal\secrets\iddb~2`,
	} {
		fi, err := os.Lstat(filepath.Join(rootfs, link))
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s: %v, mode %v; want a symbolic link", link, err, fi)
			continue
		}
		if got, err := os.Readlink(filepath.Join(rootfs, link)); err != nil || got != want {
			t.Errorf("%s -> %q, %v; want %q", link, got, err, want)
		}
	}
	if _, err := os.Lstat(`C:\srv\conf\api.key`); err == nil {
		t.Errorf(`a link landed on the host's C:\srv`)
	}
}

func TestAttachRefusesAnExistingFile(t *testing.T) {
	m, _ := newMounter(t)
	mt := build(t, m)
	defer mt.Wipe()
	rootfs := tempDir(t)
	if err := os.MkdirAll(filepath.Join(rootfs, `app\conf`), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, `app\conf\api.key`), []byte("image"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := mt.Attach(context.Background(), mounter.Container{ID: "c1", Rootfs: rootfs})
	if err == nil || !strings.Contains(err.Error(), `C:\app\conf\api.key already exists`) {
		t.Fatalf("Attach over a file: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(rootfs, `app\conf\api.key`)); string(b) != "image" {
		t.Fatalf("the image's file changed: %q", b)
	}
}

func TestRecover(t *testing.T) {
	m, state := newMounter(t)
	live, gone, never := build(t, m), build(t, m), build(t, m)
	unsure := build(t, m)
	for id, mt := range map[string]*Mount{"live": live, "gone": gone, "unsure": unsure} {
		if err := mt.Attach(context.Background(), mounter.Container{ID: id, Rootfs: tempDir(t)}); err != nil {
			t.Fatal(err)
		}
	}
	foreign := filepath.Join(state, secretsDirName, "operator-notes")
	if err := os.Mkdir(foreign, 0o700); err != nil {
		t.Fatal(err)
	}
	// A fresh Mounter, as after an agent restart.
	m2, err := New(state)
	if err != nil {
		t.Fatal(err)
	}
	kept, err := m2.Recover(func(id string) (bool, error) {
		switch id {
		case "live":
			return true, nil
		case "unsure":
			return false, errors.New("containerd is not answering")
		}
		return false, nil
	})
	if err == nil || !strings.Contains(err.Error(), "containerd is not answering") {
		t.Fatalf("Recover error = %v, want the unsure container's", err)
	}
	if len(kept) != 1 || kept["live"] == nil || kept["live"].dir != live.dir {
		t.Fatalf("kept = %v, want live only", kept)
	}
	for name, dir := range map[string]string{"live": live.dir, "unsure": unsure.dir, "foreign": foreign} {
		if _, err := os.Lstat(dir); err != nil {
			t.Errorf("%s: %v, want it kept", name, err)
		}
	}
	for name, dir := range map[string]string{"gone": gone.dir, "never attached": never.dir} {
		if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v, want it wiped", name, err)
		}
	}
	if err := kept["live"].Attach(context.Background(), mounter.Container{ID: "live", Rootfs: tempDir(t)}); err == nil {
		t.Error("a recovered mount attached again")
	}
	if err := kept["live"].Wipe(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(live.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("recovered mount after Wipe: %v", err)
	}
	unsure.Wipe()
}

func TestRecoverLeavesItsOwnBuildsAlone(t *testing.T) {
	m, _ := newMounter(t)
	mt := build(t, m) // built, not yet attached: no owner
	kept, err := m.Recover(func(string) (bool, error) { return false, nil })
	if err != nil || len(kept) != 0 {
		t.Fatalf("Recover = %v, %v", kept, err)
	}
	if _, err := os.Lstat(mt.Source()); err != nil {
		t.Fatalf("Recover took a build in progress: %v", err)
	}
	if err := mt.Wipe(); err != nil {
		t.Fatal(err)
	}
	if len(m.live) != 0 {
		t.Fatalf("live after Wipe: %v", m.live)
	}
}

func TestVolumeID(t *testing.T) {
	id, err := volumeID(tempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(id, `\\?\Volume{`) || !strings.HasSuffix(id, `}\`) {
		t.Fatalf("volumeID = %q, want \\\\?\\Volume{GUID}\\", id)
	}
}

// TestBitLockerProtected runs the real WMI query: whatever the machine's
// BitLocker state, it must answer without an error. (Wine has no
// PowerShell: hack/test-windows.sh skips this test.)
func TestBitLockerProtected(t *testing.T) {
	protected, err := BitLockerProtected(context.Background(), tempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("state volume protected by BitLocker: %v", protected)
}
