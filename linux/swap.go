//go:build linux

package linux

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/mounter"
)

// moveMountBeneath is MOVE_MOUNT_BENEATH (include/uapi/linux/mount.h,
// Linux 6.5): move_mount puts the mount beneath the top mount at the
// target instead of on top of it. golang.org/x/sys v0.49 lacks it.
const moveMountBeneath = 0x200

// ErrBeneathUnsupported is a live update on a kernel that cannot mount
// beneath a mount (before Linux 6.5). The only other way to swap a
// single-file mount is to unmount the old file and mount the new one,
// which leaves the target missing, or showing the empty mountpoint, for
// a moment: a reader could see that, so the update is refused instead and
// the container keeps its previous files.
var ErrBeneathUnsupported = errors.New("this kernel cannot mount beneath a mount (MOVE_MOUNT_BENEATH, Linux 6.5 or later), the only atomic way to swap a single-file mount; the container keeps its previous files until it is restarted")

// moveBeneath mounts the detached mount from beneath the top mount whose
// root to is. A variable so that a test can stand in an older kernel.
var moveBeneath = func(from, to int) error {
	return unix.MoveMount(from, "", to, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH|moveMountBeneath)
}

var _ mounter.Updater = (*Mount)(nil)

// Update changes the files of the running container c (c.Pid required) to
// next's, target by target in the order of their targets (mounter.Updater):
//
//   - a changed file (another secret, owner or mode) is written under a new
//     name in the container's tmpfs, cloned read-only, mounted beneath the
//     container's current mount at the target, and the current mount, now
//     on top, is detached: a reader that opens the target finds the old
//     file or the new one, never none (the mountpoint under them, the
//     agent's empty file on read-only and user-namespaced roots, is never
//     uncovered);
//   - an added file is attached as at start (Attach's rules: resolved
//     inside the root, mountpoint made if it can be);
//   - a removed file's mount is detached.
//
// A target is touched only while its top mount is the very file this
// Mount put there (same inode of this tmpfs): a container that replaced
// its target by a symlink or mounted something over it keeps it, and the
// update of that target fails. The old file of a changed or removed target
// is overwritten and freed once no open file holds it (reclaim).
func (m *Mount) Update(ctx context.Context, c mounter.Container, next *mounter.Plan, src mounter.SecretSource) ([]mounter.File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.wiped:
		return m.current(), errors.New("update: the mount has been wiped")
	case next == nil || next.OS != mounter.Linux:
		return m.current(), errors.New("update: not a linux plan")
	case c.Pid <= 0:
		return m.current(), errors.New("update: the container's pid is required")
	}
	if err := ctx.Err(); err != nil {
		return m.current(), err
	}
	diff := mounter.DiffFiles(m.files, next.Files)
	if diff.Empty() {
		return m.current(), nil
	}
	staged, err := m.stage(append(append([]mounter.File(nil), diff.Added...), diff.Changed...), c, src)
	if err != nil {
		return m.current(), err
	}
	ops, err := m.swapOps(diff, staged)
	if err != nil {
		m.unstage(staged, nil)
		return m.current(), err
	}
	own := ownBindAt(m.mountpointSource)
	proc, err := procForMountinfo()
	if err != nil {
		for _, op := range ops {
			if op.clone >= 0 {
				unix.Close(op.clone)
			}
		}
		m.unstage(staged, nil)
		return m.current(), err
	}
	if proc >= 0 {
		defer unix.Close(proc)
	}
	done := 0
	err = inMountNamespace(c.Pid, "", func(root int) error {
		for _, op := range ops {
			if err := op.apply(root, proc, own); err != nil {
				return err
			}
			done++
		}
		return nil
	})
	for _, op := range ops[:done] {
		m.applied(op)
	}
	for _, op := range ops[done:] {
		if op.clone >= 0 {
			unix.Close(op.clone)
		}
	}
	m.unstage(staged, ops[:done])
	m.scheduleReclaim()
	return m.current(), err
}

// Files returns the files the container holds now, as its plan names
// them: for a recovered mount, those found in the container.
func (m *Mount) Files() []mounter.File {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.current()
}

// current returns the files the container holds, as the plan named them.
func (m *Mount) current() []mounter.File {
	out := make([]mounter.File, len(m.files))
	for i, f := range m.files {
		f.Name = planName(f.Name)
		out[i] = f
	}
	return out
}

// planName strips the generation an update adds to a file's name in the
// tmpfs ("ID@3" is plan file "ID").
func planName(name string) string {
	if i := strings.IndexByte(name, '@'); i >= 0 {
		return name[:i]
	}
	return name
}

// stage writes files into the tmpfs under new names (a plan name never
// holds '@'), owned for c's user-namespace mappings, and returns them with
// those names, by target.
func (m *Mount) stage(files []mounter.File, c mounter.Container, src mounter.SecretSource) (map[string]mounter.File, error) {
	if len(files) == 0 {
		return nil, nil
	}
	if m.fd < 0 {
		// The container started with no file at all: its tmpfs is made now.
		mr := m.owner
		if mr == nil {
			mr = &Mounter{}
		}
		fd, err := mr.newTmpfs(tmpfsSize(files), 1+2*len(files))
		if err != nil {
			return nil, fmt.Errorf("update: %w", err)
		}
		m.fd = fd
		if err := m.setWritable(false); err != nil {
			return nil, fmt.Errorf("update: %w", err)
		}
	} else if err := m.grow(files); err != nil {
		return nil, err
	}
	if err := m.setWritable(true); err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	staged := make(map[string]mounter.File, len(files))
	err := func() error {
		for _, f := range files {
			m.gen++
			f.Name = f.Name + "@" + strconv.FormatUint(m.gen, 10)
			if err := writeFile(m.fd, f, src, m.mark); err != nil {
				wipeFile(m.fd, f)
				return fmt.Errorf("update: %w", err)
			}
			staged[f.Target] = f
			if err := m.chownOne(f, c); err != nil {
				return fmt.Errorf("update: %w", err)
			}
		}
		return nil
	}()
	if err != nil {
		for _, f := range staged {
			wipeFile(m.fd, f)
		}
		staged = nil
	}
	if rerr := m.setWritable(false); rerr != nil {
		// Never clone a writable mount for a container.
		for _, f := range staged {
			wipeFile(m.fd, f)
		}
		return nil, errors.Join(err, fmt.Errorf("update: %w", rerr))
	}
	return staged, err
}

// grow raises the tmpfs's size and inode caps so that files fit beside
// the files it holds and the retired ones not yet reclaimed: a changed
// file's old and new versions live side by side until readers let go.
func (m *Mount) grow(files []mounter.File) error {
	all := append(append(append([]mounter.File(nil), m.files...), m.retired...), files...)
	size, inodes := tmpfsSize(all), int64(1+2*len(all)+inodeSlack)
	// Never below what is in use: a file that left the tmpfs lives on
	// (and is charged) while a reader holds it or its detached mount.
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(m.fd, &sfs); err != nil {
		return fmt.Errorf("update: statfs the tmpfs: %w", err)
	}
	size = max(size, int64(sfs.Blocks-sfs.Bfree)*sfs.Bsize+tmpfsSize(files))
	inodes = max(inodes, int64(sfs.Files-sfs.Ffree)+int64(2*len(files)+inodeSlack))
	fsfd, err := fspick(m.fd)
	if err != nil {
		return fmt.Errorf("update: reopen the tmpfs to grow it: %w", err)
	}
	defer unix.Close(fsfd)
	if err := unix.FsconfigSetString(fsfd, "size", strconv.FormatInt(size, 10)); err != nil {
		return fmt.Errorf("update: grow the tmpfs: %w", err)
	}
	if err := unix.FsconfigSetString(fsfd, "nr_inodes", strconv.FormatInt(inodes, 10)); err != nil {
		return fmt.Errorf("update: grow the tmpfs's inodes: %w", err)
	}
	if err := unix.FsconfigReconfigure(fsfd); err != nil {
		return fmt.Errorf("update: grow the tmpfs: %w", err)
	}
	return nil
}

// fspick opens the superblock of the mount fd for reconfiguration
// (fspick(2), Linux 5.2; x/sys has the number, not the call).
func fspick(fd int) (int, error) {
	empty, err := unix.BytePtrFromString("")
	if err != nil {
		return -1, err
	}
	r, _, errno := unix.Syscall(unix.SYS_FSPICK, uintptr(fd), uintptr(unsafe.Pointer(empty)), unix.FSPICK_EMPTY_PATH|unix.FSPICK_CLOEXEC)
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

// chownOne gives f the host ids that c's user namespace shows as the
// grant's ids (Build set the grant's own ids): at attach (chownMapped)
// and for a live update's new files.
func (m *Mount) chownOne(f mounter.File, c mounter.Container) error {
	if len(c.UIDMappings) == 0 && len(c.GIDMappings) == 0 {
		return nil
	}
	uid, ok := mapID(f.UID, c.UIDMappings)
	if !ok {
		return &UnmappedError{Secret: f.SecretName, Kind: "uid", ID: f.UID}
	}
	gid, ok := mapID(f.GID, c.GIDMappings)
	if !ok {
		return &UnmappedError{Secret: f.SecretName, Kind: "gid", ID: f.GID}
	}
	if err := unix.Fchownat(m.fd, f.Name, int(uid), int(gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown secret %q to %d:%d: %w", f.SecretName, uid, gid, err)
	}
	// chown clears no permission bit we use, but re-apply the mode so
	// that it never depends on that.
	if err := unix.Fchmodat(m.fd, f.Name, uint32(f.Mode.Perm()), 0); err != nil {
		return fmt.Errorf("chmod secret %q: %w", f.SecretName, err)
	}
	return nil
}

// unstage wipes the staged files that no applied op put in place.
func (m *Mount) unstage(staged map[string]mounter.File, applied []swapOp) {
	used := map[string]bool{}
	for _, op := range applied {
		if op.new != nil {
			used[op.new.Name] = true
		}
	}
	var left []mounter.File
	for _, f := range staged {
		if !used[f.Name] {
			left = append(left, f)
		}
	}
	if len(left) == 0 {
		return
	}
	if err := m.setWritable(true); err != nil {
		// They stay until Wipe, which knows them as retired.
		m.retired = append(m.retired, left...)
		return
	}
	for _, f := range left {
		if err := wipeFile(m.fd, f); err != nil {
			m.retired = append(m.retired, f)
		}
	}
	if err := m.setWritable(false); err != nil {
		// Nothing is cloned from a writable mount: the next clone
		// (Handover, Update) flips it again first or fails.
		m.broken = err
	}
}

// swapOp is one target's change: old is the file there now (nil: added),
// new the file to put there (nil: removed).
type swapOp struct {
	target   string
	old, new *mounter.File
	// oldID is the identity of the old file in the tmpfs: the container's
	// mount at the target must be exactly it.
	oldID fileID
	// clone is the new file's read-only detached mount (-1: none).
	clone int
	// newID is the new file's identity, to check the result.
	newID fileID
}

type fileID struct{ dev, ino uint64 }

// oldID is the identity of the file f the container holds: in the tmpfs,
// or, for a file recovered after an agent restart, its clone's.
func (m *Mount) oldID(f mounter.File) (fileID, error) {
	if fd, ok := m.cloneOf[f.Target]; ok {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return fileID{}, err
		}
		return fileID{dev: st.Dev, ino: st.Ino}, nil
	}
	return m.statName(f.Name)
}

func (m *Mount) statName(name string) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(m.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fileID{}, err
	}
	return fileID{dev: st.Dev, ino: st.Ino}, nil
}

// swapOps turns diff into ops sorted by target, with a read-only clone of
// every new file, taken while the tmpfs is read-only.
func (m *Mount) swapOps(diff mounter.FileDiff, staged map[string]mounter.File) ([]swapOp, error) {
	if m.broken != nil {
		return nil, fmt.Errorf("update: %w", m.broken)
	}
	cur := make(map[string]mounter.File, len(m.files))
	for _, f := range m.files {
		cur[f.Target] = f
	}
	var ops []swapOp
	fail := func(err error) ([]swapOp, error) {
		for _, op := range ops {
			if op.clone >= 0 {
				unix.Close(op.clone)
			}
		}
		return nil, fmt.Errorf("update: %w", err)
	}
	add := func(target string, hasOld, hasNew bool) error {
		op := swapOp{target: target, clone: -1}
		if hasOld {
			o := cur[target]
			op.old = &o
			id, err := m.oldID(o)
			if err != nil {
				return fmt.Errorf("%s: the current file: %w", target, err)
			}
			op.oldID = id
		}
		if hasNew {
			n := staged[target]
			op.new = &n
			id, err := m.statName(n.Name)
			if err != nil {
				return fmt.Errorf("%s: the new file: %w", target, err)
			}
			op.newID = id
			fd, err := unix.OpenTree(m.fd, n.Name, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
			if err != nil {
				return fmt.Errorf("%s: clone the new file: %w", target, err)
			}
			op.clone = fd
			if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}); err != nil {
				ops = append(ops, op)
				return fmt.Errorf("%s: make the new file's mount read-only: %w", target, err)
			}
		}
		ops = append(ops, op)
		return nil
	}
	for _, f := range diff.Added {
		if err := add(f.Target, false, true); err != nil {
			return fail(err)
		}
	}
	for _, f := range diff.Changed {
		if err := add(f.Target, true, true); err != nil {
			return fail(err)
		}
	}
	for _, f := range diff.Removed {
		if err := add(f.Target, true, false); err != nil {
			return fail(err)
		}
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].target < ops[j].target })
	return ops, nil
}

// applied records a done op: the target now holds op.new, and op.old is
// retired, to be overwritten once nothing holds it open.
func (m *Mount) applied(op swapOp) {
	if op.clone >= 0 {
		unix.Close(op.clone)
	}
	// A changed file keeps its place, an added one goes last: the files
	// stay in the order the container got them.
	files := make([]mounter.File, 0, len(m.files)+1)
	placed := false
	for _, f := range m.files {
		if f.Target != op.target {
			files = append(files, f)
		} else if op.new != nil {
			files = append(files, *op.new)
			placed = true
		}
	}
	if op.new != nil && !placed {
		files = append(files, *op.new)
	}
	m.files = files
	if op.old == nil {
		return
	}
	if fd, ok := m.cloneOf[op.target]; ok {
		// A file the agent recovered: it is reached only through its
		// clone.
		delete(m.cloneOf, op.target)
		m.retiredClones = append(m.retiredClones, retiredClone{fd: fd, secret: op.old.SecretName})
		return
	}
	m.retired = append(m.retired, *op.old)
}

// apply carries out op inside the container's mount namespace; root is
// the container's root, proc and own as for attachOne.
func (op *swapOp) apply(root, proc int, own ownBind) error {
	if op.old == nil {
		w := newRootWalk(root)
		defer w.close()
		return attachFd(w, proc, own, op.target, op.new.SecretName, op.clone)
	}
	rel := strings.TrimPrefix(op.target, "/")
	parent := root
	if d := path.Dir(rel); d != "." {
		fd, err := openInRoot(root, d, unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return fmt.Errorf("update %s: resolve its directory: %w", op.target, err)
		}
		defer unix.Close(fd)
		parent = fd
	}
	base := path.Base(rel)
	if op.new != nil {
		top, err := ourTop(parent, base, op.target, op.oldID)
		if err != nil {
			return err
		}
		err = moveBeneath(op.clone, top)
		unix.Close(top)
		if errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("update %s: %w", op.target, ErrBeneathUnsupported)
		}
		if err != nil {
			return fmt.Errorf("update %s: mount the new file beneath the old: %w", op.target, err)
		}
	}
	// Detach the old file, now on top of the new one (or of whatever the
	// secret covered, for a removed target). umount2 takes a path: the
	// name in its directory, from this thread's own cwd (its fs struct is
	// unshared), never following a symlink.
	top, err := ourTop(parent, base, op.target, op.oldID)
	if err != nil {
		return err
	}
	unix.Close(top)
	if err := unix.Fchdir(parent); err != nil {
		return fmt.Errorf("update %s: enter its directory: %w", op.target, err)
	}
	if err := unix.Unmount(base, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil {
		return fmt.Errorf("update %s: detach the old file: %w", op.target, err)
	}
	if op.new != nil {
		fd, err := ourTop(parent, base, op.target, op.newID)
		if err != nil {
			return fmt.Errorf("update %s: the new file is not in place after the swap: %w", op.target, err)
		}
		// An fd left open here would pin the new file's mount after its
		// own later detach: one leaked fd per container per rotation.
		unix.Close(fd)
	}
	return nil
}

// ourTop opens the top mount at base in parent (never following a
// symlink) and checks that it is a mount whose root is exactly the file
// want of this tmpfs; it returns an O_PATH fd on it.
func ourTop(parent int, base, target string, want fileID) (int, error) {
	fd, err := unix.Openat(parent, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("update %s: %w", target, err)
	}
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_INO, &stx); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("update %s: statx: %w", target, err)
	}
	root := stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 && stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0
	if !root || unix.Mkdev(stx.Dev_major, stx.Dev_minor) != want.dev || stx.Ino != want.ino {
		unix.Close(fd)
		return -1, fmt.Errorf("update %s: %w", target, ErrNotOurs)
	}
	return fd, nil
}

// ErrNotOurs is a live update of a target whose top mount is not the file
// the mounter put there: the container replaced or covered it. The target
// is left alone.
var ErrNotOurs = errors.New("the target is no longer the secret the agent mounted there (the container replaced it or mounted over it); left alone")
