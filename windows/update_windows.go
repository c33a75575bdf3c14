package windows

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unsafe"

	winapi "golang.org/x/sys/windows"

	"github.com/lockbox-project/lockbox/mounter"
)

// A live update on Windows (mounter.Updater). The container's targets are
// symbolic links to C:\ProgramData\Docker\internal\secrets\<name>, the
// read-only mapped view of this mount's files\ directory; the agent cannot
// reach the container's own filesystem once it runs (its layers are
// mounted by the runtime shim), so everything happens in files\, under the
// name each link already points at:
//
//   - a changed target: the new bytes go to a new file outside files\
//     (staging-*, created with the private ACL), the old file gets a
//     second name outside files\ (retired-*, a hard link), and the new file
//     is renamed over the old name in one call. With POSIX semantics
//     (FileRenameInformationEx, FILE_RENAME_REPLACE_IF_EXISTS |
//     FILE_RENAME_POSIX_SEMANTICS: Windows 10 1809 / Server 2019 on NTFS)
//     the rename replaces the file even while readers hold it open
//     ("existing handles to the replaced file continue to be valid for
//     operations such as read and write; any subsequent opens of the target
//     name will open the renamed file", Microsoft's FILE_RENAME_INFORMATION
//     reference). Where POSIX semantics are missing (older Windows, other
//     file systems, wine) the plain replacing rename (FileRenameInformation,
//     what MoveFileEx(MOVEFILE_REPLACE_EXISTING) does) is used: just as
//     atomic for a reader, but refused (access denied) while a reader holds
//     the old file open without FILE_SHARE_DELETE; the target then keeps
//     its old file and the update fails, to be retried.
//     Either way a reader that opens the target gets the old file or the
//     new one, whole: the name always exists. Kubernetes' AtomicWriter, on
//     Windows, removes its ..data link and creates it again (a moment with
//     no file at all); this does not.
//   - a removed target: its file is renamed out of files\ (to retired-*);
//     the container's link then dangles, and a reader gets "file not
//     found", as for a removed reference. The rename needs DELETE access,
//     which a reader holding the file without FILE_SHARE_DELETE denies: the
//     removal then fails and is retried.
//   - an added target: it needs a new link in the container's filesystem,
//     which only exists for the agent before the container starts. Refused
//     (ErrAddNeedsRestart); the container's other targets are updated. A
//     target a live update removed still has its link: added back, its new
//     file is renamed (not replacing anything) to the name the link names.
//
// Old files (retired-*) are overwritten once no handle holds them
// (reclaim_windows.go).

// ErrAddNeedsRestart is a live update that adds a target to a running
// Windows container: the link at the target can only be made in the
// container's filesystem before it starts.
var ErrAddNeedsRestart = errors.New("a new target of a running Windows container needs a symbolic link in its filesystem, which the agent can only make before the container starts: restart the container to get it (its other files are updated)")

var _ mounter.Updater = (*Mount)(nil)

// Update changes the running container's files to next's (mounter.Updater),
// target by target in the order of their targets; see above for how. c is
// not used: Windows containers are updated through their mount alone. The
// new files are all written before any target changes, so a failure to
// write one changes nothing. A target whose change fails keeps its file;
// the others are still changed, and the error names every failure.
func (mt *Mount) Update(ctx context.Context, c mounter.Container, next *mounter.Plan, src mounter.SecretSource) ([]mounter.File, error) {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	switch {
	case mt.wiped:
		return mt.current(), errors.New("windows mounter: update: the mount has been wiped")
	case mt.files == nil && mt.recovered:
		return nil, fmt.Errorf("windows mounter: update: the agent restarted and %s names no files (written by an older agent): restart the container to get the new files", indexFileName)
	}
	if err := checkPlan(next); err != nil {
		return mt.current(), fmt.Errorf("windows mounter: update: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return mt.current(), err
	}
	diff := mounter.DiffFiles(mt.files, next.Files)
	if diff.Empty() {
		return mt.current(), nil
	}
	// New bytes for every changed target, and for every added one whose
	// link is still there.
	toStage := append([]mounter.File(nil), diff.Changed...)
	for _, f := range diff.Added {
		if _, ok := mt.removed[f.Target]; ok {
			toStage = append(toStage, f)
		}
	}
	staged, err := mt.stage(toStage, src)
	if err != nil {
		return mt.current(), fmt.Errorf("windows mounter: update: %w", err)
	}
	defer func() {
		for _, s := range staged {
			s.discard()
		}
	}()

	type op struct {
		target   string
		old, new *mounter.File
	}
	cur := make(map[string]mounter.File, len(mt.files))
	for _, f := range mt.files {
		cur[f.Target] = f
	}
	var ops []op
	for _, f := range diff.Added {
		ops = append(ops, op{target: f.Target, new: &f})
	}
	for _, f := range diff.Changed {
		o := cur[f.Target]
		ops = append(ops, op{target: f.Target, old: &o, new: &f})
	}
	for _, f := range diff.Removed {
		ops = append(ops, op{target: f.Target, old: &f})
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].target < ops[j].target })

	var errs []error
	changed := false
	for _, o := range ops {
		var err error
		switch {
		case o.old == nil:
			name, ok := mt.removed[o.target]
			if !ok {
				err = ErrAddNeedsRestart
				break
			}
			if err = mt.restore(name, staged[o.target]); err == nil {
				f := *o.new
				f.Name = name
				mt.setFile(o.target, &f)
				delete(mt.removed, o.target)
				delete(staged, o.target)
			}
		case o.new == nil:
			if err = mt.remove(*o.old); err == nil {
				mt.setFile(o.target, nil)
				if mt.removed == nil {
					mt.removed = map[string]string{}
				}
				mt.removed[o.target] = o.old.Name
			}
		default:
			if err = mt.replace(*o.old, staged[o.target]); err == nil {
				f := *o.new
				f.Name = o.old.Name // the container's link points at it
				mt.setFile(o.target, &f)
				delete(staged, o.target)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("secret %q at %s: %w", secretOf(o.old, o.new), o.target, err))
			continue
		}
		changed = true
	}
	if changed {
		if err := mt.writeIndex(); err != nil {
			errs = append(errs, err)
		}
	}
	mt.scheduleReclaim()
	if err := errors.Join(errs...); err != nil {
		return mt.current(), fmt.Errorf("windows mounter: update: %w", err)
	}
	return mt.current(), nil
}

func secretOf(old, new *mounter.File) string {
	if new != nil {
		return new.SecretName
	}
	return old.SecretName
}

// Files returns the files the container holds now (nil for a recovered
// mount without an index).
func (mt *Mount) Files() []mounter.File {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	return mt.current()
}

func (mt *Mount) current() []mounter.File {
	if mt.files == nil {
		return nil
	}
	return append([]mounter.File{}, mt.files...)
}

// setFile puts f at target (nil: removes the target), keeping the order;
// a new target goes last.
func (mt *Mount) setFile(target string, f *mounter.File) {
	out := make([]mounter.File, 0, len(mt.files)+1)
	placed := false
	for _, cur := range mt.files {
		switch {
		case cur.Target != target:
			out = append(out, cur)
		case f != nil:
			out = append(out, *f)
			placed = true
		}
	}
	if f != nil && !placed {
		out = append(out, *f)
	}
	mt.files = out
}

// stagedFile is a new file written outside files\, with its handle still
// open (DELETE access, no sharing), ready to be renamed over an old one.
type stagedFile struct {
	path string
	f    *os.File
}

// discard closes and wipes a staged file that was not put in place.
func (s stagedFile) discard() {
	s.f.Close()
	wipeFile(s.path)
}

// stage writes files' bytes into new files beside files\, by target.
func (mt *Mount) stage(files []mounter.File, src mounter.SecretSource) (map[string]stagedFile, error) {
	staged := make(map[string]stagedFile, len(files))
	for _, f := range files {
		s, err := mt.stageOne(f, src)
		if err != nil {
			for _, s := range staged {
				s.discard()
			}
			return nil, fmt.Errorf("secret %q: %w", f.SecretName, err)
		}
		staged[f.Target] = s
	}
	return staged, nil
}

func (mt *Mount) stageOne(f mounter.File, src mounter.SecretSource) (stagedFile, error) {
	token, err := newToken()
	if err != nil {
		return stagedFile{}, err
	}
	path := filepath.Join(mt.dir, stagingPrefix+token)
	out, err := createSecretFileAccess(path, mt.sa, winapi.GENERIC_WRITE|winapi.DELETE|winapi.SYNCHRONIZE)
	if err != nil {
		return stagedFile{}, err
	}
	s := stagedFile{path: path, f: out}
	werr := src.WithSecret(f.SecretID, func(data []byte) error {
		_, err := out.Write(data)
		return err
	})
	if werr != nil {
		s.discard()
		return stagedFile{}, werr
	}
	return s, nil
}

// replace puts the staged file in place of old's file in files\, keeping
// the old file under a retired name.
func (mt *Mount) replace(old mounter.File, s stagedFile) error {
	retired, err := mt.retireByLink(old)
	if err != nil {
		return err
	}
	err = withDir(mt.Source(), func(dir winapi.Handle) error {
		return swapFile(winapi.Handle(s.f.Fd()), dir, old.Name)
	})
	if err != nil {
		// The old file is still in place. Its second name goes again;
		// if a reader's handle forbids that, reclaim removes the name
		// later, seeing that it is still the container's file.
		if rerr := removeEntry(retired); rerr != nil {
			mt.retired = append(mt.retired, filepath.Base(retired))
		}
		return fmt.Errorf("replace the file: %w", err)
	}
	s.f.Close()
	mt.retired = append(mt.retired, filepath.Base(retired))
	return nil
}

// retireByLink gives the file at old's name a second, retired name beside
// files\ (a hard link, which readers' handles do not hinder), so that it
// can be overwritten after the swap.
func (mt *Mount) retireByLink(old mounter.File) (string, error) {
	token, err := newToken()
	if err != nil {
		return "", err
	}
	retired := filepath.Join(mt.dir, retiredPrefix+token)
	from, err := winapi.UTF16PtrFromString(filepath.Join(mt.Source(), old.Name))
	if err != nil {
		return "", err
	}
	to, err := winapi.UTF16PtrFromString(retired)
	if err != nil {
		return "", err
	}
	if err := winapi.CreateHardLink(to, from, 0); err != nil {
		return "", fmt.Errorf("keep the old file: %w", err)
	}
	return retired, nil
}

// restore puts the staged file at name in files\, where nothing is: the
// name a removed target's link still names.
func (mt *Mount) restore(name string, s stagedFile) error {
	err := withDir(mt.Source(), func(dir winapi.Handle) error {
		return renameHandle(winapi.Handle(s.f.Fd()), dir, name, winapi.FileRenameInformation, 0)
	})
	if err != nil {
		return fmt.Errorf("put the file back: %w", err)
	}
	s.f.Close()
	return nil
}

// remove takes old's file out of files\ by renaming it to a retired name.
func (mt *Mount) remove(old mounter.File) error {
	token, err := newToken()
	if err != nil {
		return err
	}
	name := retiredPrefix + token
	h, err := openEntry(filepath.Join(mt.Source(), old.Name), winapi.DELETE|winapi.SYNCHRONIZE, winapi.FILE_SHARE_READ|winapi.FILE_SHARE_WRITE|winapi.FILE_SHARE_DELETE)
	if err != nil {
		if errors.Is(err, winapi.ERROR_SHARING_VIOLATION) {
			return fmt.Errorf("a reader holds the file open without FILE_SHARE_DELETE; retried: %w", err)
		}
		return fmt.Errorf("open the file to remove it: %w", err)
	}
	defer winapi.CloseHandle(h)
	err = withDir(mt.dir, func(dir winapi.Handle) error {
		return renameHandle(h, dir, name, winapi.FileRenameInformation, 0)
	})
	if err != nil {
		return fmt.Errorf("remove the file: %w", err)
	}
	mt.retired = append(mt.retired, name)
	return nil
}

// swapFile renames the file open as h to name in dir, replacing the file
// there atomically. A variable so that a test can make a swap fail.
var swapFile = func(h, dir winapi.Handle, name string) error {
	err := renameHandle(h, dir, name, fileRenameInformationEx, winapi.FILE_RENAME_REPLACE_IF_EXISTS|winapi.FILE_RENAME_POSIX_SEMANTICS)
	if !posixRenameUnsupported(err) {
		return err
	}
	err = renameHandle(h, dir, name, winapi.FileRenameInformation, 1)
	if errors.Is(err, winapi.STATUS_ACCESS_DENIED) || errors.Is(err, winapi.STATUS_SHARING_VIOLATION) {
		return fmt.Errorf("a reader holds the old file open without FILE_SHARE_DELETE and this system cannot replace an open file (no POSIX rename semantics); retried: %w", err)
	}
	return err
}

// fileRenameInformationEx is FileRenameInformationEx (ntifs.h), which
// golang.org/x/sys lacks.
const fileRenameInformationEx = 65

// posixRenameUnsupported reports whether err says the system has no
// FileRenameInformationEx (before Windows 10 1709, a file system that
// does not implement it, wine 8.0).
func posixRenameUnsupported(err error) bool {
	for _, s := range []winapi.NTStatus{winapi.STATUS_NOT_IMPLEMENTED, winapi.STATUS_INVALID_INFO_CLASS,
		winapi.STATUS_INVALID_PARAMETER, winapi.STATUS_NOT_SUPPORTED} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// fileRenameInformation is FILE_RENAME_INFORMATION (ntifs.h): Flags is
// the union with FileRenameInformation's BOOLEAN ReplaceIfExists.
type fileRenameInformation struct {
	Flags          uint32
	RootDirectory  winapi.Handle
	FileNameLength uint32
	FileName       [1]uint16
}

// renameHandle renames the file open as h (with DELETE access) to name
// in the directory open as dir, with NtSetInformationFile: the new name is
// resolved from that handle, never from a path someone could swap.
func renameHandle(h, dir winapi.Handle, name string, class, flags uint32) error {
	n, err := winapi.UTF16FromString(name)
	if err != nil {
		return err
	}
	buf := make([]byte, int(unsafe.Offsetof(fileRenameInformation{}.FileName))+2*len(n))
	info := (*fileRenameInformation)(unsafe.Pointer(&buf[0]))
	info.Flags = flags
	info.RootDirectory = dir
	info.FileNameLength = uint32(2 * (len(n) - 1)) // without the NUL
	copy(unsafe.Slice(&info.FileName[0], len(n)), n)
	var iosb winapi.IO_STATUS_BLOCK
	return winapi.NtSetInformationFile(h, &iosb, &buf[0], uint32(len(buf)), class)
}

// withDir runs fn with a handle on the directory path (never through a
// reparse point).
func withDir(path string, fn func(winapi.Handle) error) error {
	h, err := openEntry(path, winapi.FILE_LIST_DIRECTORY|winapi.FILE_TRAVERSE|winapi.SYNCHRONIZE,
		winapi.FILE_SHARE_READ|winapi.FILE_SHARE_WRITE|winapi.FILE_SHARE_DELETE)
	if err != nil {
		return err
	}
	defer winapi.CloseHandle(h)
	return fn(h)
}

// openEntry opens a file or directory itself, never what a reparse point
// there names.
func openEntry(path string, access, share uint32) (winapi.Handle, error) {
	p, err := winapi.UTF16PtrFromString(path)
	if err != nil {
		return winapi.InvalidHandle, err
	}
	h, err := winapi.CreateFile(p, access, share, nil, winapi.OPEN_EXISTING,
		winapi.FILE_FLAG_OPEN_REPARSE_POINT|winapi.FILE_FLAG_BACKUP_SEMANTICS, 0)
	if err != nil {
		return winapi.InvalidHandle, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return h, nil
}

// writeIndex records the container's files in files.json (replaced whole:
// a crash leaves the old index or the new one).
func (mt *Mount) writeIndex() error {
	b, err := encodeIndex(mt.files, mt.removed)
	if err != nil {
		return err
	}
	path := filepath.Join(mt.dir, indexFileName)
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", indexFileName, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", indexFileName, err)
	}
	return nil
}

// load reads back, for a recovered mount, the files its container holds
// (files.json) and the old files still to overwrite; new files a crashed
// update left unused are wiped (the container never saw them).
func (mt *Mount) load() {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	if b, err := os.ReadFile(filepath.Join(mt.dir, indexFileName)); err == nil {
		if files, removed, err := decodeIndex(b); err == nil {
			mt.files, mt.removed = files, removed
		}
	}
	entries, err := os.ReadDir(mt.dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		switch name := e.Name(); {
		case strings.HasPrefix(name, retiredPrefix):
			mt.retired = append(mt.retired, name)
		case strings.HasPrefix(name, stagingPrefix), name == indexFileName+".new":
			wipeFile(filepath.Join(mt.dir, name))
		}
	}
	mt.scheduleReclaim()
}
