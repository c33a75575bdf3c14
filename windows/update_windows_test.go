package windows

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	winapi "golang.org/x/sys/windows"

	"github.com/lockbox-project/lockbox/mounter"
)

// Targets of the update tests' plans.
const (
	dbTarget  = mounter.WindowsSecretsDir + `\db`
	apiTarget = `C:\app\conf\api.key`
	newTarget = `C:\app\new.txt`
)

func updateSource() *source {
	return &source{data: map[string][]byte{
		"db1":  []byte("old-db-password"),
		"db2":  []byte("the new db password, longer"),
		"api1": []byte("api-key-one"),
		"api2": []byte("api-key-two"),
		"new1": []byte("brand new"),
	}}
}

func winPlan(t *testing.T, grants ...mounter.Grant) *mounter.Plan {
	t.Helper()
	plan, err := mounter.NewPlan(mounter.Windows, grants)
	if err != nil {
		t.Fatal(err)
	}
	return plan
}

var (
	db1  = mounter.Grant{SecretID: "db1", SecretName: "db", Size: 15}
	db2  = mounter.Grant{SecretID: "db2", SecretName: "db", Size: 27}
	api1 = mounter.Grant{SecretID: "api1", SecretName: "api", Target: apiTarget, Size: 11}
	api2 = mounter.Grant{SecretID: "api2", SecretName: "api", Target: apiTarget, Size: 11}
	new1 = mounter.Grant{SecretID: "new1", SecretName: "new", Target: newTarget, Size: 9}
)

// attached builds and attaches a mount with db1 and api1.
func attached(t *testing.T, m *Mounter, src *source) *Mount {
	t.Helper()
	mnt, err := m.Build(context.Background(), winPlan(t, db1, api1), src)
	if err != nil {
		t.Fatal(err)
	}
	mt := mnt.(*Mount)
	if err := mt.Attach(context.Background(), mounter.Container{ID: "c1", Rootfs: tempDir(t)}); err != nil {
		t.Fatal(err)
	}
	return mt
}

// seen is what a reader in the container reads at target: the file in the
// mapped directory that the target's link names (the name Attach linked).
func seen(t *testing.T, mt *Mount, linked map[string]string, target string) (string, error) {
	t.Helper()
	name, ok := linked[target]
	if !ok {
		t.Fatalf("no link at %s", target)
	}
	b, err := os.ReadFile(filepath.Join(mt.Source(), name))
	return string(b), err
}

// links maps each target to the internal file its link names.
func links(mt *Mount) map[string]string {
	out := map[string]string{}
	for _, f := range mt.Files() {
		out[f.Target] = f.Name
	}
	return out
}

// leftovers lists what a mount directory holds besides files\, the owner
// and the index.
func leftovers(t *testing.T, mt *Mount) []string {
	t.Helper()
	entries, err := os.ReadDir(mt.dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		switch e.Name() {
		case filesDirName, ownerFileName, indexFileName:
		default:
			out = append(out, e.Name())
		}
	}
	return out
}

// TestUpdate: a live update changes and removes the files a running
// container's links name, under the names the links point at, and keeps
// the old files under retired names until reclaim overwrites them; an
// added target is refused (the container's filesystem is out of reach)
// while the rest of the update applies.
func TestUpdate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		next    []mounter.Grant
		want    map[string]string // target: content; "" means gone
		wantErr error
		retired int
	}{
		{"rotate one", []mounter.Grant{db2, api1}, map[string]string{dbTarget: "the new db password, longer", apiTarget: "api-key-one"}, nil, 1},
		{"rotate both", []mounter.Grant{db2, api2}, map[string]string{dbTarget: "the new db password, longer", apiTarget: "api-key-two"}, nil, 2},
		{"remove", []mounter.Grant{db1}, map[string]string{dbTarget: "old-db-password", apiTarget: ""}, nil, 1},
		{"add refused, rotation applied", []mounter.Grant{db2, api1, new1}, map[string]string{dbTarget: "the new db password, longer", apiTarget: "api-key-one"}, ErrAddNeedsRestart, 1},
		{"nothing", []mounter.Grant{db1, api1}, map[string]string{dbTarget: "old-db-password", apiTarget: "api-key-one"}, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := newMounter(t)
			src := updateSource()
			mt := attached(t, m, src)
			defer mt.Wipe()
			linked := links(mt)
			files, err := mt.Update(context.Background(), mounter.Container{ID: "c1"}, winPlan(t, tc.next...), src)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Update error = %v, want %v", err, tc.wantErr)
			}
			for target, want := range tc.want {
				got, err := seen(t, mt, linked, target)
				switch {
				case want == "" && !errors.Is(err, os.ErrNotExist):
					t.Errorf("%s: read %q, %v; want it gone", target, got, err)
				case want != "" && (err != nil || got != want):
					t.Errorf("%s: read %q, %v; want %q", target, got, err, want)
				}
			}
			// What Update returns is what the container holds, and a
			// restarted agent reads the same back.
			for _, f := range files {
				if want, ok := tc.want[f.Target]; !ok || want == "" {
					t.Errorf("Update returned a file at %s, which the container does not hold", f.Target)
				}
			}
			b, err := os.ReadFile(filepath.Join(mt.dir, indexFileName))
			if err != nil {
				t.Fatal(err)
			}
			indexed, _, err := decodeIndex(b)
			if err != nil || len(indexed) != len(files) {
				t.Errorf("index %v (%v), want %v", indexed, err, files)
			}
			if n := mt.Retired(); n != tc.retired {
				t.Errorf("%d retired files, want %d", n, tc.retired)
			}
			if left := mt.reclaim(); left != 0 {
				t.Errorf("%d retired files left after reclaim with no reader", left)
			}
			if l := leftovers(t, mt); len(l) != 0 {
				t.Errorf("left in the mount directory: %v", l)
			}
			// Again with the same plan: nothing to do.
			if _, err := mt.Update(context.Background(), mounter.Container{ID: "c1"}, winPlan(t, tc.next...), src); !errors.Is(err, tc.wantErr) {
				t.Errorf("second Update: %v", err)
			}
		})
	}
}

// TestUpdateOwnerAndMode: Windows containers have no uid, gid or mode (the
// ACL decides who reads): a plan that sets them is refused before any
// mounter sees it, so a live update never changes them.
func TestUpdateOwnerAndMode(t *testing.T) {
	for _, g := range []mounter.Grant{
		{SecretID: "db1", SecretName: "db", UID: "1000"},
		{SecretID: "db1", SecretName: "db", GID: "1000"},
		{SecretID: "db1", SecretName: "db", Mode: 0o400},
	} {
		if _, err := mounter.NewPlan(mounter.Windows, []mounter.Grant{g}); err == nil {
			t.Errorf("plan with %+v accepted", g)
		}
	}
}

// TestUpdateOldBytesOverwritten: the replaced file's bytes are overwritten
// with zeros before it is deleted. A second name the test gives the old
// file sees the overwrite.
func TestUpdateOldBytesOverwritten(t *testing.T) {
	m, _ := newMounter(t)
	src := updateSource()
	mt := attached(t, m, src)
	defer mt.Wipe()
	if _, err := mt.Update(context.Background(), mounter.Container{ID: "c1"}, winPlan(t, db2, api1), src); err != nil {
		t.Fatal(err)
	}
	if len(mt.retired) != 1 {
		t.Fatalf("retired %v, want one", mt.retired)
	}
	spy := filepath.Join(tempDir(t), "spy")
	from, _ := winapi.UTF16PtrFromString(filepath.Join(mt.dir, mt.retired[0]))
	to, _ := winapi.UTF16PtrFromString(spy)
	if err := winapi.CreateHardLink(to, from, 0); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(spy); string(b) != "old-db-password" {
		t.Fatalf("retired file holds %q before reclaim", b)
	}
	if left := mt.reclaim(); left != 0 {
		t.Fatalf("%d left", left)
	}
	b, err := os.ReadFile(spy)
	if err != nil || len(b) != len("old-db-password") || !bytes.Equal(b, make([]byte, len(b))) {
		t.Errorf("old file after reclaim: %q, %v; want zeros", b, err)
	}
}

// TestUpdateReaderHoldsOldFile: a reader that opened the old file before
// the swap (Go's os.Open: no FILE_SHARE_DELETE, as most programs) is never
// cut short. With POSIX rename semantics (Windows 10 1809 / Server 2019 on
// NTFS) the swap happens and the reader reads the old bytes to the end;
// the old file is overwritten only after it closes. Without them (wine,
// older systems) the swap is refused: the target keeps its old file, the
// error says why, and the retry after the reader closed applies. Either
// way the container's file is never zeroed by a reclaim.
func TestUpdateReaderHoldsOldFile(t *testing.T) {
	m, _ := newMounter(t)
	src := updateSource()
	mt := attached(t, m, src)
	defer mt.Wipe()
	linked := links(mt)
	reader, err := os.Open(filepath.Join(mt.Source(), linked[dbTarget]))
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 4)
	if _, err := io.ReadFull(reader, first); err != nil {
		t.Fatal(err)
	}
	next := winPlan(t, db2, api1)
	_, uerr := mt.Update(context.Background(), mounter.Container{ID: "c1"}, next, src)
	if uerr != nil && !strings.Contains(uerr.Error(), "FILE_SHARE_DELETE") {
		t.Fatalf("Update while a reader holds the file: %v", uerr)
	}
	if uerr == nil {
		t.Log("POSIX rename semantics: swapped under the reader")
		if got, _ := seen(t, mt, linked, dbTarget); got != "the new db password, longer" {
			t.Errorf("after the swap the target reads %q", got)
		}
	} else {
		t.Logf("no POSIX rename semantics: %v", uerr)
		if got, _ := seen(t, mt, linked, dbTarget); got != "old-db-password" {
			t.Errorf("after a refused swap the target reads %q, want the old file", got)
		}
	}
	if left := mt.reclaim(); left == 0 && uerr == nil {
		t.Error("the old file was reclaimed while a reader holds it")
	}
	rest, err := io.ReadAll(reader)
	if got := string(first) + string(rest); err != nil || got != "old-db-password" {
		t.Errorf("the reader read %q, %v; want the old file whole", got, err)
	}
	reader.Close()
	if left := mt.reclaim(); left != 0 {
		t.Errorf("%d retired files left after the reader closed", left)
	}
	want := "old-db-password"
	if uerr == nil {
		want = "the new db password, longer"
	}
	if got, err := seen(t, mt, linked, dbTarget); got != want {
		t.Errorf("after reclaim the target reads %q, %v; want %q (never zeros)", got, err, want)
	}
	if _, err := mt.Update(context.Background(), mounter.Container{ID: "c1"}, next, src); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if got, _ := seen(t, mt, linked, dbTarget); got != "the new db password, longer" {
		t.Errorf("after the retry the target reads %q", got)
	}
	mt.reclaim()
	if l := leftovers(t, mt); len(l) != 0 {
		t.Errorf("left in the mount directory: %v", l)
	}
}

// TestUpdateFailsPartWay: a swap that fails leaves its target's old file
// in place (and nothing of the new one), the targets before and after it
// still change, and the retry with the same plan completes. A secret that
// cannot be read fails the update before any target changes.
func TestUpdateFailsPartWay(t *testing.T) {
	for _, tc := range []struct {
		name      string
		failSwap  string // the file name whose swap fails
		failRead  string // the secret ID whose bytes cannot be read
		wantDB    string
		wantAPI   string
		wantError string
	}{
		{"swap of api fails", "api1", "", "the new db password, longer", "api-key-one", "injected"},
		{"swap of db fails", "db1", "", "old-db-password", "api-key-two", "injected"},
		{"a secret cannot be read", "", "api2", "old-db-password", "api-key-one", "api2 is gone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := newMounter(t)
			src := updateSource()
			mt := attached(t, m, src)
			defer mt.Wipe()
			linked := links(mt)
			real := swapFile
			t.Cleanup(func() { swapFile = real })
			swapFile = func(h, dir winapi.Handle, name string) error {
				if name == tc.failSwap {
					return errors.New("injected")
				}
				return real(h, dir, name)
			}
			src.fail = tc.failRead
			next := winPlan(t, db2, api2)
			files, err := mt.Update(context.Background(), mounter.Container{ID: "c1"}, next, src)
			if err == nil || !strings.Contains(err.Error(), tc.wantError) {
				t.Fatalf("Update error = %v, want %q", err, tc.wantError)
			}
			if got, _ := seen(t, mt, linked, dbTarget); got != tc.wantDB {
				t.Errorf("db reads %q, want %q", got, tc.wantDB)
			}
			if got, _ := seen(t, mt, linked, apiTarget); got != tc.wantAPI {
				t.Errorf("api reads %q, want %q", got, tc.wantAPI)
			}
			for _, f := range files {
				want := map[string]string{dbTarget: tc.wantDB, apiTarget: tc.wantAPI}[f.Target]
				if got := string(src.data[f.SecretID]); got != want {
					t.Errorf("Update says %s holds %s (%q), the container reads %q", f.Target, f.SecretID, got, want)
				}
			}
			mt.reclaim()
			if l := leftovers(t, mt); len(l) != 0 {
				t.Errorf("left in the mount directory: %v", l)
			}
			swapFile, src.fail = real, ""
			if _, err := mt.Update(context.Background(), mounter.Container{ID: "c1"}, next, src); err != nil {
				t.Fatalf("retry: %v", err)
			}
			if got, _ := seen(t, mt, linked, dbTarget); got != "the new db password, longer" {
				t.Errorf("db after retry reads %q", got)
			}
			if got, _ := seen(t, mt, linked, apiTarget); got != "api-key-two" {
				t.Errorf("api after retry reads %q", got)
			}
		})
	}
}

// TestUpdateRecovered: after an agent restart the recovered mount knows
// the container's files from its index and updates them under the names
// the links point at; old files an update left are reclaimed; a mount
// attached without an index (an older agent) is wiped but not updated.
func TestUpdateRecovered(t *testing.T) {
	m, state := newMounter(t)
	src := updateSource()
	mt := attached(t, m, src)
	linked := links(mt)
	if _, err := mt.Update(context.Background(), mounter.Container{ID: "c1"}, winPlan(t, db2, api1), src); err != nil {
		t.Fatal(err)
	}
	if mt.Retired() == 0 {
		t.Fatal("nothing retired")
	}
	old, err := m.Build(context.Background(), winPlan(t, db1), src)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Attach(context.Background(), mounter.Container{ID: "c2", Rootfs: tempDir(t)}); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(old.(*Mount).dir, indexFileName))

	m2, err := New(state)
	if err != nil {
		t.Fatal(err)
	}
	kept, err := m2.RecoverStore(func(string) (bool, error) { return true, nil })
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := kept["c2"].(mounter.Updater); ok {
		t.Error("a mount without an index can be updated")
	}
	up, ok := kept["c1"].(mounter.Updater)
	if !ok {
		t.Fatalf("recovered mount %T is not an Updater", kept["c1"])
	}
	rec := kept["c1"].(*Mount)
	if got := rec.Files(); len(got) != 2 || got[0].SecretID != "db2" || got[0].Name != linked[dbTarget] {
		t.Fatalf("recovered files %+v", got)
	}
	if n := rec.Retired(); n != mt.Retired() {
		t.Errorf("recovered %d retired files, want %d", n, mt.Retired())
	}
	if _, err := up.Update(context.Background(), mounter.Container{ID: "c1"}, winPlan(t, db2, api2), src); err != nil {
		t.Fatal(err)
	}
	if got, _ := seen(t, rec, linked, apiTarget); got != "api-key-two" {
		t.Errorf("api reads %q after the recovered update", got)
	}
	if left := rec.reclaim(); left != 0 {
		t.Errorf("%d left", left)
	}
	for _, k := range kept {
		if err := k.Wipe(); err != nil {
			t.Error(err)
		}
	}
}

// TestUpdateAfterWipe: a wiped mount is not updated.
func TestUpdateAfterWipe(t *testing.T) {
	m, _ := newMounter(t)
	src := updateSource()
	mt := attached(t, m, src)
	if err := mt.Wipe(); err != nil {
		t.Fatal(err)
	}
	if _, err := mt.Update(context.Background(), mounter.Container{ID: "c1"}, winPlan(t, db2, api1), src); err == nil {
		t.Error("a wiped mount was updated")
	}
}

// updated returns a mount whose db target a live update has changed, and
// the path of the file the container's link names.
func updated(t *testing.T) (*Mount, string) {
	t.Helper()
	m, _ := newMounter(t)
	src := updateSource()
	mt := attached(t, m, src)
	t.Cleanup(func() { mt.Wipe() })
	if _, err := mt.Update(context.Background(), mounter.Container{ID: "c1"}, winPlan(t, db2, api1), src); err != nil {
		t.Fatal(err)
	}
	return mt, filepath.Join(mt.Source(), links(mt)[dbTarget])
}

// TestUpdateACL: the file a live update puts in place has the private ACL
// (Administrators and SYSTEM, protected), as Build's files. (Wine keeps no
// ACLs: hack/test-windows.sh skips this test.)
func TestUpdateACL(t *testing.T) {
	_, path := updated(t)
	sd, err := winapi.GetNamedSecurityInfo(path, winapi.SE_FILE_OBJECT, winapi.DACL_SECURITY_INFORMATION)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkPrivateDACL(sd.String()); err != nil {
		t.Errorf("%s: %v", path, err)
	}
}

// TestUpdateSetsFileAttributes: the new file keeps the cache manager and
// the indexer away, as Build's files. (Wine drops these attributes:
// hack/test-windows.sh skips this test.)
func TestUpdateSetsFileAttributes(t *testing.T) {
	_, path := updated(t)
	p, _ := winapi.UTF16PtrFromString(path)
	attrs, err := winapi.GetFileAttributes(p)
	if err != nil {
		t.Fatal(err)
	}
	const want = winapi.FILE_ATTRIBUTE_TEMPORARY | winapi.FILE_ATTRIBUTE_NOT_CONTENT_INDEXED
	if attrs&want != want {
		t.Fatalf("attributes %#x, want %#x set", attrs, want)
	}
}

// TestUpdateRemoveWhileReaderHolds: a target whose file a reader holds
// open without FILE_SHARE_DELETE cannot be renamed out (Windows denies the
// DELETE access it needs): the removal fails, the file stays whole for the
// reader and at its name, and the retry after the reader closed removes it.
func TestUpdateRemoveWhileReaderHolds(t *testing.T) {
	m, _ := newMounter(t)
	src := updateSource()
	mt := attached(t, m, src)
	defer mt.Wipe()
	linked := links(mt)
	reader, err := os.Open(filepath.Join(mt.Source(), linked[apiTarget]))
	if err != nil {
		t.Fatal(err)
	}
	next := winPlan(t, db1)
	files, err := mt.Update(context.Background(), mounter.Container{ID: "c1"}, next, src)
	if err == nil || !strings.Contains(err.Error(), "FILE_SHARE_DELETE") {
		t.Fatalf("Update error = %v, want the reader's handle named", err)
	}
	if len(files) != 2 {
		t.Errorf("Update says the container holds %v, want both files still", files)
	}
	if got, err := seen(t, mt, linked, apiTarget); err != nil || got != "api-key-one" {
		t.Errorf("api reads %q, %v; want it kept", got, err)
	}
	b, err := io.ReadAll(reader)
	if err != nil || string(b) != "api-key-one" {
		t.Errorf("the reader read %q, %v", b, err)
	}
	reader.Close()
	if _, err := mt.Update(context.Background(), mounter.Container{ID: "c1"}, next, src); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if _, err := seen(t, mt, linked, apiTarget); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("api after the retry: %v, want it gone", err)
	}
	if left := mt.reclaim(); left != 0 {
		t.Errorf("%d left", left)
	}
}

// TestUpdateAddBack: a target a live update removed keeps its link in the
// container; added back (also after an agent restart), its new file goes
// to the name that link names, where nothing was: the container reads it
// again without a restart.
func TestUpdateAddBack(t *testing.T) {
	for _, restart := range []bool{false, true} {
		name := map[bool]string{false: "same agent", true: "after a restart"}[restart]
		t.Run(name, func(t *testing.T) {
			m, state := newMounter(t)
			src := updateSource()
			mt := attached(t, m, src)
			defer mt.Wipe()
			linked := links(mt)
			if _, err := mt.Update(context.Background(), mounter.Container{ID: "c1"}, winPlan(t, db1), src); err != nil {
				t.Fatal(err)
			}
			if _, err := seen(t, mt, linked, apiTarget); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("api after removal: %v", err)
			}
			up := mounter.Updater(mt)
			if restart {
				m2, err := New(state)
				if err != nil {
					t.Fatal(err)
				}
				kept, err := m2.RecoverStore(func(string) (bool, error) { return true, nil })
				if err != nil {
					t.Fatal(err)
				}
				up = kept["c1"].(mounter.Updater)
			}
			files, err := up.Update(context.Background(), mounter.Container{ID: "c1"}, winPlan(t, db1, api2), src)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := seen(t, mt, linked, apiTarget); err != nil || got != "api-key-two" {
				t.Errorf("api added back reads %q, %v", got, err)
			}
			if len(files) != 2 || files[1].Target != apiTarget || files[1].Name != linked[apiTarget] || files[1].SecretID != "api2" {
				t.Errorf("files after adding back: %+v", files)
			}
		})
	}
}
