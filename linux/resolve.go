//go:build linux

package linux

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNoMountpoint is returned when a target's mountpoint is missing and the
// container's root is read-only, so it cannot be created: the adapter must
// add it to the container's spec at create time (api/claim's
// MountpointMounts).
var ErrNoMountpoint = errors.New("mountpoint missing on a read-only container root; add it to the container's spec at create time")

var errDangling = errors.New("a symlink to nothing inside the container (the mounter does not create symlink targets)")

// resolveFlags keep every lookup inside the container's root: ".." and
// absolute symlinks stop at root, and /proc magic links are refused.
const resolveFlags = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS

// openInRoot opens rel inside root. openat2 returns EAGAIN when a rename
// raced the lookup; retry a few times.
func openInRoot(root int, rel string, flags int) (int, error) {
	how := &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: resolveFlags}
	var err error
	for range 8 {
		var fd int
		fd, err = unix.Openat2(root, rel, how)
		if err == nil {
			return fd, nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
			break
		}
	}
	return -1, err
}

// rootWalk is one attach's view of a container's root: the directories it
// has resolved (or made) inside it so far, kept open for the attach's later
// targets (ten secrets under /run/secrets resolve /run and /run/secrets
// once, not ten times), and the root's own stat. It lives for one attach,
// before anything in the container has started; forget drops the
// directories once a mount moved in may cover one of them.
type rootWalk struct {
	root  int
	rst   unix.Stat_t
	rstOK bool
	dirs  map[string]int
}

func newRootWalk(root int) *rootWalk { return &rootWalk{root: root} }

// dir returns an fd on relDir inside the root (mkdirAll), the root itself
// for "."; the walk owns it.
func (w *rootWalk) dir(target, relDir string) (int, error) {
	if relDir == "." {
		return w.root, nil
	}
	if fd, ok := w.dirs[relDir]; ok {
		return fd, nil
	}
	fd, err := mkdirAll(w.root, target, relDir)
	if err != nil {
		return -1, err
	}
	if w.dirs == nil {
		w.dirs = map[string]int{}
	}
	w.dirs[relDir] = fd
	return fd, nil
}

// rootStat is the root's stat, taken once.
func (w *rootWalk) rootStat(target string) (*unix.Stat_t, error) {
	if !w.rstOK {
		if err := unix.Fstat(w.root, &w.rst); err != nil {
			return nil, fmt.Errorf("attach %s: stat container root: %w", target, err)
		}
		w.rstOK = true
	}
	return &w.rst, nil
}

// forget closes and drops the directories resolved so far.
func (w *rootWalk) forget() {
	for _, fd := range w.dirs {
		unix.Close(fd)
	}
	w.dirs = nil
}

// close releases the walk's fds (not the root's).
func (w *rootWalk) close() { w.forget() }

// mountpoint returns an O_PATH fd on target inside root, creating it (an
// empty directory or file, and any missing parents) if it is missing. An
// existing target that is the root of a mount other than own (the agent's
// mountpoint bind), or a file of another mount than the root's (a
// volume's), is refused (ErrMountCollision); secret names the secret in
// that error.
// Every lookup is an openat2 RESOLVE_IN_ROOT from root, so symlinks in the
// image resolve as they would inside the container; creation is by a single
// name in a parent resolved that way and never follows a symlink, so nothing
// is ever created outside root. A symlink that leads nowhere is refused, not
// completed.
func mountpoint(root int, target string, dir bool, own ownBind, secret string) (int, error) {
	w := newRootWalk(root)
	defer w.close()
	return w.mountpoint(target, dir, own, secret)
}

// mountpoint is mountpoint() with the walk's directories. It creates the
// target first and looks it up after: a container's secrets are new files,
// so the lookup that would find nothing is skipped. Creation is exclusive
// and never follows a symlink (O_EXCL|O_NOFOLLOW, mkdirat): EEXIST says the
// target existed (or is a symlink, which the lookup then resolves inside
// root, or refuses when it leads nowhere). The kernel answers EEXIST before
// EROFS, so an existing target on a read-only root is looked up, and a
// missing one there fails with ErrNoMountpoint.
func (w *rootWalk) mountpoint(target string, dir bool, own ownBind, secret string) (int, error) {
	if !path.IsAbs(target) || path.Clean(target) != target || target == "/" {
		return -1, fmt.Errorf("attach %q: a target is an absolute, clean path below /", target)
	}
	rel := strings.TrimPrefix(target, "/")
	parent, err := w.dir(target, path.Dir(rel))
	if err != nil {
		return -1, err
	}
	base := path.Base(rel)
	existed := false
	for range 2 {
		if dir {
			err = unix.Mkdirat(parent, base, 0o755)
		} else {
			var fd int
			fd, err = unix.Openat(parent, base, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
			if err == nil {
				unix.Close(fd)
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, unix.EEXIST):
			// There before the attach, made meanwhile, or a symlink.
			existed = true
		case errors.Is(err, unix.EROFS):
			return -1, fmt.Errorf("attach %s: %w", target, ErrNoMountpoint)
		default:
			return -1, fmt.Errorf("attach %s: create mountpoint: %w", target, err)
		}
		fd, err := openInRoot(w.root, rel, unix.O_PATH)
		if err == nil {
			rst, err := w.rootStat(target)
			if err == nil {
				err = checkMountpoint(rst, fd, target, dir)
			}
			if err == nil {
				err = refuseCollision(w.root, fd, target, secret, existed, own)
			}
			if err != nil {
				unix.Close(fd)
				return -1, err
			}
			return fd, nil
		}
		if !errors.Is(err, unix.ENOENT) {
			return -1, fmt.Errorf("attach %s: resolve mountpoint: %w", target, err)
		}
		// A dangling symlink, or a name removed meanwhile: try once more.
	}
	return -1, fmt.Errorf("attach %s: %w", target, errDangling)
}

// mkdirAll resolves relDir inside root, creating missing directories, and
// returns an fd on it (root itself for ".").
func mkdirAll(root int, target, relDir string) (int, error) {
	if relDir == "." {
		return root, nil
	}
	cur := root
	prefix := ""
	for _, elem := range strings.Split(relDir, "/") {
		prefix = path.Join(prefix, elem)
		fd, err := openInRoot(root, prefix, unix.O_PATH|unix.O_DIRECTORY)
		if errors.Is(err, unix.ENOENT) {
			err = unix.Mkdirat(cur, elem, 0o755)
			switch {
			case err == nil:
				// mkdir applied the umask; the container's users must be
				// able to traverse. Chmod through an fd resolved inside the
				// root, never by name.
				fd, err = openInRoot(root, prefix, unix.O_RDONLY|unix.O_DIRECTORY)
				if err == nil {
					if cerr := unix.Fchmod(fd, 0o755); cerr != nil {
						unix.Close(fd)
						fd, err = -1, cerr
					}
				}
			case errors.Is(err, unix.EEXIST):
				fd, err = openInRoot(root, prefix, unix.O_PATH|unix.O_DIRECTORY)
				if errors.Is(err, unix.ENOENT) {
					// mkdir found a name that does not resolve: a
					// dangling symlink. Creating its target would let the
					// image choose where the mounter writes; refuse.
					err = errDangling
				}
			case errors.Is(err, unix.EROFS):
				err = ErrNoMountpoint
			}
		}
		if cur != root {
			unix.Close(cur)
		}
		if err != nil {
			return -1, fmt.Errorf("attach %s: directory /%s: %w", target, prefix, err)
		}
		cur = fd
	}
	return cur, nil
}

// checkMountpoint refuses a mountpoint of the wrong type, the container's
// root itself (rst is its stat) (a /run/secrets symlinked to / would hide the whole root), and
// kernel file systems a symlink may lead to.
func checkMountpoint(rst *unix.Stat_t, fd int, target string, dir bool) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("attach %s: stat mountpoint: %w", target, err)
	}
	if st.Dev == rst.Dev && st.Ino == rst.Ino {
		return fmt.Errorf("attach %s: the target resolves to the container's root", target)
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	switch {
	case dir && !isDir:
		return fmt.Errorf("attach %s: the target exists in the container and is not a directory", target)
	case !dir && st.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("attach %s: the target exists in the container and is not a regular file", target)
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return fmt.Errorf("attach %s: statfs mountpoint: %w", target, err)
	}
	if sfs.Type == unix.PROC_SUPER_MAGIC || sfs.Type == unix.SYSFS_MAGIC {
		return fmt.Errorf("attach %s: the target resolves into /proc or /sys", target)
	}
	return nil
}
