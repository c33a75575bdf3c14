//go:build linux

package linux

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/mounter"
)

// ErrMountCollision is mounter.ErrMountCollision: a target's mountpoint is
// already the root of a mount in the container (a volume, a Kubernetes
// service-account token), or an existing file of one, other than the
// agent's own mountpoint bind.
var ErrMountCollision = mounter.ErrMountCollision

// ownBind identifies the agent's empty mountpoint file (api/claim's
// MountpointSource): a mount whose root is that file is the bind an
// adapter added to the spec for a secret, and the secret goes on top of it.
// ok is false when the file is missing or not a regular empty file: then
// no mount is taken for the agent's own.
type ownBind struct {
	dev, ino uint64
	ok       bool
}

// ownBindAt stats the mountpoint file at path in the caller's mount
// namespace (the host's for the agent; a hook's before pivot_root sees the
// host's paths too). It never follows a symlink.
func ownBindAt(path string) ownBind {
	if path == "" {
		return ownBind{}
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != 0 {
		return ownBind{}
	}
	return ownBind{dev: st.Dev, ino: st.Ino, ok: true}
}

// refuseCollision refuses a mountpoint fd (resolved inside root, the
// container's root) that is the root of a mount, unless that mount is own,
// the agent's mountpoint bind; and, when the file existed before the
// attach (existed), one that lies in a mount other than the root's: a file
// of a volume (a service-account token in its directory), which the
// secret would hide. A file the image holds at the target lies on the
// root's mount and is covered, as Docker covers it. Kernels before 5.8 do
// not give a file's mount (STATX_ATTR_MOUNT_ROOT, STATX_MNT_ID); there the
// check cannot be made and is skipped.
func refuseCollision(root, fd int, target, secret string, existed bool, own ownBind) error {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_INO|unix.STATX_MNT_ID, &stx); err != nil {
		return fmt.Errorf("attach %s: statx mountpoint: %w", target, err)
	}
	collides := false
	switch {
	case stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 && stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0:
		if own.ok && unix.Mkdev(stx.Dev_major, stx.Dev_minor) == own.dev && stx.Ino == own.ino {
			return nil
		}
		collides = true
	case existed && stx.Mask&unix.STATX_MNT_ID != 0:
		var rtx unix.Statx_t
		if err := unix.Statx(root, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &rtx); err != nil {
			return fmt.Errorf("attach %s: statx container root: %w", target, err)
		}
		collides = rtx.Mask&unix.STATX_MNT_ID != 0 && rtx.Mnt_id != stx.Mnt_id
	}
	if !collides {
		return nil
	}
	if secret != "" {
		return fmt.Errorf("attach secret %q at %s: the target %w", secret, target, ErrMountCollision)
	}
	return fmt.Errorf("attach %s: the target %w", target, ErrMountCollision)
}

// EnsureMountpointSource makes path the agent's empty mountpoint file: a
// root-owned, read-only (0444), empty regular file, which adapters bind at
// the targets of containers whose root the agent cannot write. A file
// already there that is not that (another type, another owner or mode,
// any content) is replaced: a container would see what it holds at its
// targets until the secrets cover them. Replacing is atomic (a new file
// linked in by rename), so that concurrent agents, or a runtime binding the
// file meanwhile, never see it half made.
func EnsureMountpointSource(path string) error {
	if ok, err := isMountpointSource(path); err != nil || ok {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("mountpoint file %s: %w", path, err)
	}
	tmp := filepath.Join(dir, "."+filepath.Base(path)+"."+strconv.Itoa(os.Getpid()))
	fd, err := unix.Open(tmp, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EEXIST) {
		// Left by a process of this pid that died (a pid reused): ours.
		unix.Unlink(tmp)
		fd, err = unix.Open(tmp, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return fmt.Errorf("mountpoint file %s: create: %w", path, err)
	}
	err = unix.Fchown(fd, 0, 0)
	if err == nil {
		err = unix.Fchmod(fd, 0o444)
	}
	unix.Close(fd)
	if err == nil {
		err = unix.Rename(tmp, path)
	}
	if err != nil {
		unix.Unlink(tmp)
		return fmt.Errorf("mountpoint file %s: %w", path, err)
	}
	if ok, err := isMountpointSource(path); err != nil || !ok {
		return fmt.Errorf("mountpoint file %s: changed while it was made (%v)", path, err)
	}
	return nil
}

// isMountpointSource reports whether path is a root-owned, 0444, empty
// regular file; a missing file is not an error.
func isMountpointSource(path string) (bool, error) {
	var st unix.Stat_t
	err := unix.Lstat(path, &st)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("mountpoint file %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return false, fmt.Errorf("mountpoint file %s: is a directory", path)
	}
	return st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == 0 && st.Uid == 0 && st.Gid == 0 && st.Mode&0o7777 == 0o444, nil
}
