//go:build linux

package linux

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/mounter"
)

// Recover takes back, after an agent restart, the secrets attached in a
// container that still runs, so that they can be wiped when it stops. The
// agent lost its mount fd with its process; the container's mounts kept the
// tmpfs alive. Recover enters c's mount namespace (c.Pid is required),
// looks at plan's targets, and keeps a private clone of each mount found
// there that is ours and c's: a read-only, nosuid, nodev, noexec tmpfs
// whose root is the target file and carries the mounter's trusted.* mark
// naming c.ID (which no container can forge). Targets where no such mount
// is found are skipped; finding none is not an error.
//
// The mark must name c.ID because the namespace Recover enters is only as
// good as the agent's record of it: a namespace known by its inode alone
// may, after the container ended, be another container's, and wiping what
// is found there would take a running stranger's secrets. Mounts marked by
// agents that wrote no container ID ("1") are therefore never taken: such a
// container keeps its files until it ends, when the kernel frees them.
//
// The returned Mount cannot be handed over again. Wipe overwrites,
// truncates and removes every file it reaches through the clones; Update
// (a live update) replaces files: the new ones live in a tmpfs of their
// own, and an old one is retired through its clone. plan's files (the
// agent's record of what the container holds) say what each target holds.
func (m *Mounter) Recover(ctx context.Context, c mounter.Container, plan *mounter.Plan) (*Mount, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if plan == nil || plan.OS != mounter.Linux {
		return nil, errors.New("recover: not a linux plan")
	}
	if c.Pid <= 0 {
		return nil, errors.New("recover: a running container's pid is required")
	}
	if c.ID == "" || len(c.ID) > maxOwner {
		return nil, errors.New("recover: the container's ID is required")
	}
	mark := markFor(c.ID)
	mnt := &Mount{fd: -1, recovered: true, mark: mark, owner: m, mountpointSource: m.MountpointSource, cloneOf: map[string]int{}}
	if mnt.mountpointSource == "" {
		mnt.mountpointSource = mounter.LinuxMountpointSource
	}
	err := inMountNamespace(c.Pid, c.Rootfs, func(root int) error {
		for _, f := range plan.Files {
			fd, err := cloneOurs(root, f.Target, mark)
			if err != nil {
				return err
			}
			if fd >= 0 {
				mnt.clones = append(mnt.clones, fd)
				// The file the container holds there, as the plan
				// (the agent's record) names it: a live update
				// starts from it.
				mnt.files = append(mnt.files, f)
				mnt.cloneOf[f.Target] = fd
			}
		}
		return nil
	})
	if err != nil {
		for _, fd := range mnt.clones {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("recover container %s: %w", c.ID, err)
	}
	return mnt, nil
}

// RecoverMount is Recover as a mounter.Recoverer.
func (m *Mounter) RecoverMount(ctx context.Context, c mounter.Container, plan *mounter.Plan) (mounter.Mount, error) {
	mnt, err := m.Recover(ctx, c, plan)
	if err != nil {
		return nil, err
	}
	return mnt, nil
}

var _ mounter.Recoverer = (*Mounter)(nil)

// cloneOurs returns a private clone of the mount at target if it is one of
// ours, or -1 if there is none: a read-only, nosuid, nodev, noexec tmpfs
// whose root is the target and carries the mounter's mark with the value
// mark.
func cloneOurs(root int, target string, mark []byte) (int, error) {
	// O_NONBLOCK: the image may have put a FIFO there.
	fd, err := openInRoot(root, strings.TrimPrefix(target, "/"), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ENXIO) {
		return -1, nil
	}
	if err != nil {
		return -1, fmt.Errorf("%s: %w", target, err)
	}
	defer unix.Close(fd)
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_TYPE, &stx); err != nil {
		return -1, fmt.Errorf("%s: statx: %w", target, err)
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return -1, fmt.Errorf("%s: statfs: %w", target, err)
	}
	want := int64(unix.ST_RDONLY | unix.ST_NOSUID | unix.ST_NODEV | unix.ST_NOEXEC)
	if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT == 0 || stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT == 0 ||
		sfs.Type != unix.TMPFS_MAGIC || sfs.Flags&want != want || !hasMark(fd, mark) {
		return -1, nil
	}
	clone, err := unix.OpenTree(fd, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if err != nil {
		return -1, fmt.Errorf("%s: clone: %w", target, err)
	}
	return clone, nil
}

// wipeClone overwrites everything reachable through a recovered clone: a
// single file (every mount the mounter makes is one), or a directory tree
// (a mount of the /run/secrets subtree that agents before the single-file
// layout attached, should a plan's target ever match one).
func wipeClone(fd int) error {
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_RDONLY}); err != nil {
		return fmt.Errorf("wipe: make the recovered mount writable: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("wipe: stat the recovered mount: %w", err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		// The mount's root is the file itself: reopen it for writing
		// through /proc, the only way from an O_PATH fd. It cannot be
		// unlinked: its name lives in the part of the tmpfs no clone
		// reaches.
		w, err := unix.Open("/proc/self/fd/"+strconv.Itoa(fd), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("wipe: reopen the recovered file: %w", err)
		}
		defer unix.Close(w)
		return overwrite(w, st.Size)
	}
	d, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("wipe: open the recovered directory: %w", err)
	}
	defer unix.Close(d)
	return wipeDir(d, 0)
}

// wipeDir overwrites and unlinks every regular file under the directory d,
// never blocking on nor following what it finds (see openRegular),
// unlinks every other non-directory, then removes the emptied
// subdirectories. The tree is ours, shallow and small; depth is bounded
// all the same.
func wipeDir(d, depth int) error {
	if depth > 64 {
		return errors.New("wipe: directory tree too deep")
	}
	names, err := readDirNames(d)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(d, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			errs = append(errs, fmt.Errorf("wipe: stat %s: %w", name, err))
			continue
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			sub, err := unix.Openat(d, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
			if err != nil {
				errs = append(errs, fmt.Errorf("wipe: open %s: %w", name, err))
				continue
			}
			errs = append(errs, wipeDir(sub, depth+1))
			unix.Close(sub)
			if err := unix.Unlinkat(d, name, unix.AT_REMOVEDIR); err != nil {
				errs = append(errs, fmt.Errorf("wipe: remove %s: %w", name, err))
			}
		default:
			// The stat above only chose the branch: what is opened is
			// checked again on its fd (openRegular), since the name may
			// have become a FIFO or a symlink since. A symlink, FIFO or
			// socket holds no data, but its name would keep the
			// directory from going.
			w, size, err := openRegular(d, name)
			if err != nil {
				errs = append(errs, fmt.Errorf("wipe: open %s: %w", name, err))
				continue
			}
			if w >= 0 {
				errs = append(errs, overwrite(w, size))
				unix.Close(w)
			}
			if err := unix.Unlinkat(d, name, 0); err != nil {
				errs = append(errs, fmt.Errorf("wipe: unlink %s: %w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}

func readDirNames(d int) ([]string, error) {
	var names []string
	buf := make([]byte, 8192)
	for {
		n, err := unix.Getdents(d, buf)
		if err != nil {
			return nil, fmt.Errorf("wipe: read directory: %w", err)
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}
