//go:build linux

package linux

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/mounter"
)

// Mounter builds detached tmpfs mounts. The zero value is ready to use.
type Mounter struct {
	// MountpointSource is the host path of the agent's empty mountpoint
	// file (EnsureMountpointSource): a target whose mountpoint is a bind of
	// it takes the secret on top, any other mount there is a collision.
	// Empty means mounter.LinuxMountpointSource.
	MountpointSource string
	// noSwapUnsupported records that the kernel refused "noswap" (it has it
	// since 6.4), so later builds do not try again.
	noSwapUnsupported atomic.Bool
}

// New returns a Mounter.
func New() *Mounter { return &Mounter{} }

var _ mounter.Mounter = (*Mounter)(nil)

// Build writes plan's files into a new detached tmpfs that no mount table
// shows. The returned Mount is a *Mount.
func (m *Mounter) Build(ctx context.Context, plan *mounter.Plan, src mounter.SecretSource) (mounter.Mount, error) {
	return m.BuildTmpfs(ctx, plan, src)
}

// BuildTmpfs is Build returning the concrete type.
func (m *Mounter) BuildTmpfs(ctx context.Context, plan *mounter.Plan, src mounter.SecretSource) (*Mount, error) {
	if plan == nil || plan.OS != mounter.Linux {
		return nil, errors.New("build tmpfs: not a linux plan")
	}
	if len(plan.Owner) > maxOwner {
		return nil, fmt.Errorf("build tmpfs: owner is %d bytes long, at most %d", len(plan.Owner), maxOwner)
	}
	mnt := &Mount{files: plan.Files, fd: -1, mark: markFor(plan.Owner), mountpointSource: m.MountpointSource, owner: m}
	if mnt.mountpointSource == "" {
		mnt.mountpointSource = mounter.LinuxMountpointSource
	}
	if len(plan.Files) == 0 {
		return mnt, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// tmpfs charges an inode's worth of space (1 KiB) for every file and
	// takes extended attributes from the same budget: count one more for
	// every file's mark (far more than one needs).
	inodes := 1 + 2*len(plan.Files)
	fd, err := m.newTmpfs(tmpfsSize(plan.Files), inodes)
	if err != nil {
		return nil, err
	}
	mnt.fd = fd
	if err := mnt.populate(ctx, src); err != nil {
		mnt.wipeLocked()
		return nil, err
	}
	if err := mnt.setWritable(false); err != nil {
		mnt.wipeLocked()
		return nil, fmt.Errorf("build tmpfs: %w", err)
	}
	return mnt, nil
}

// setWritable flips the read-only flag of the mounter's own detached mount.
// Clones already attached in containers keep their own (read-only) flags:
// mount flags are per mount, not per file system.
func (m *Mount) setWritable(w bool) error {
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
	if w {
		attr = &unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_RDONLY}
	}
	var err error
	for try := 0; try < 50; try++ {
		// EBUSY: the kernel still counts a writer that has just closed
		// (Docker retries its read-only remount the same way, moby#48783).
		if err = unix.MountSetattr(m.fd, "", unix.AT_EMPTY_PATH, attr); !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("set mount writable=%v: %w", w, err)
	}
	return nil
}

// newTmpfs creates a detached tmpfs mount and returns its fd.
func (m *Mounter) newTmpfs(size int64, inodes int) (int, error) {
	fsfd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen tmpfs: %w", err)
	}
	defer unix.Close(fsfd)
	opts := [][2]string{
		{"size", strconv.FormatInt(size, 10)},
		{"nr_inodes", strconv.Itoa(inodes + inodeSlack)},
		// Only the mounter walks the root; attached views start below it.
		{"mode", "0700"},
		// Never back secrets with huge pages, whatever the system default.
		{"huge", "never"},
	}
	for _, o := range opts {
		if err := unix.FsconfigSetString(fsfd, o[0], o[1]); err != nil {
			return -1, fmt.Errorf("fsconfig tmpfs %s=%s: %w", o[0], o[1], err)
		}
	}
	if !m.noSwapUnsupported.Load() {
		// A secret must not reach a swap device. Kernels before 6.4 refuse
		// the flag; they keep the tmpfs swappable, like Docker's.
		if err := unix.FsconfigSetFlag(fsfd, "noswap"); err != nil {
			m.noSwapUnsupported.Store(true)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fmt.Errorf("fsconfig tmpfs create: %w", err)
	}
	fd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsmount tmpfs: %w", err)
	}
	return fd, nil
}

const inodeSlack = 2

// tmpfsSize is just above the payload: tmpfs counts whole pages per file;
// one spare page absorbs rounding.
func tmpfsSize(files []mounter.File) int64 {
	page := int64(os.Getpagesize())
	size := page
	for _, f := range files {
		size += (f.Size + page - 1) / page * page
	}
	return size
}

// populate writes the files through m.fd, still writable.
func (m *Mount) populate(ctx context.Context, src mounter.SecretSource) error {
	for _, f := range m.files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := writeFile(m.fd, f, src, m.mark); err != nil {
			return err
		}
	}
	return nil
}

// writeFile creates f by name, writes the secret, then sets owner and mode.
// The file is created with mode 0 so that nothing can open it before it is
// complete.
func writeFile(dirfd int, f mounter.File, src mounter.SecretSource, mark []byte) error {
	fd, err := unix.Openat(dirfd, f.Name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("build tmpfs: create file for secret %q: %w", f.SecretName, err)
	}
	defer unix.Close(fd)
	err = src.WithSecret(f.SecretID, func(data []byte) error {
		if int64(len(data)) != f.Size {
			// Lengths only: never the data.
			return fmt.Errorf("holds %d bytes, the plan says %d", len(data), f.Size)
		}
		for len(data) > 0 {
			n, err := unix.Write(fd, data)
			if err != nil {
				return err
			}
			data = data[n:]
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("build tmpfs: write secret %q: %w", f.SecretName, err)
	}
	if err := unix.Fchown(fd, int(f.UID), int(f.GID)); err != nil {
		return fmt.Errorf("build tmpfs: chown secret %q to %d:%d: %w", f.SecretName, f.UID, f.GID, err)
	}
	if err := unix.Fchmod(fd, uint32(f.Mode.Perm())); err != nil {
		return fmt.Errorf("build tmpfs: chmod secret %q: %w", f.SecretName, err)
	}
	// Every file is the root of the single-file mounts cloned from it:
	// Recover finds them by this mark.
	if err := unix.Fsetxattr(fd, markXattr, mark, 0); err != nil {
		return fmt.Errorf("build tmpfs: mark secret %q: %w", f.SecretName, err)
	}
	return nil
}

// markXattr marks what the mounter creates, so that Recover can tell its
// mounts from a container's own. Only a process with CAP_SYS_ADMIN in the
// initial user namespace can set a trusted.* attribute, which no container
// has. Its value names the container the mount was built for (markFor), so
// that Recover, sent into a mount namespace that may not be the container's
// any more (the kernel reuses namespace inodes), takes nothing that belongs
// to another container.
const markXattr = "trusted.lockbox"

// maxOwner bounds a plan's Owner: container IDs are far shorter, and the
// mark is charged to the tmpfs's small inode budget.
const maxOwner = 255

// markFor is the mark of a mount built for the container owner. The prefix
// keeps it apart from the "1" that agents before the container ID was
// written there set: a mount marked "1" names no container, and Recover
// leaves it alone (see Recover).
func markFor(owner string) []byte { return []byte("container=" + owner) }

// hasMark reports whether the file open at fd carries markXattr with
// exactly the value want.
func hasMark(fd int, want []byte) bool {
	buf := make([]byte, len(want)+1)
	n, err := unix.Fgetxattr(fd, markXattr, buf)
	return err == nil && n == len(want) && string(buf[:n]) == string(want)
}

// Mount is one container's tmpfs, held by the agent until the container
// stops.
type Mount struct {
	mu    sync.Mutex
	files []mounter.File
	// mark is the value of markXattr on every file (each the root of the
	// single-file mounts cloned from it).
	mark []byte
	// fd is the detached tmpfs mount: read-only except while the mounter
	// itself writes (build, ownership translation, wipe). Every attached
	// clone derives from it while it is read-only. -1 when the plan is
	// empty or the mount has been wiped.
	fd int
	// mountpointSource is the Mounter's MountpointSource.
	mountpointSource string
	// recovered mounts were taken back from a running container by
	// Recover: clones of its mounts, which can be wiped, not attached.
	recovered bool
	clones    []int
	wiped     bool
	// cloneOf maps a recovered target that no update has replaced yet to
	// its clone in clones: its file lives in the tmpfs the agent lost.
	cloneOf map[string]int
	// retiredClones are recovered files an update replaced, waiting, in
	// clones, until reclaim overwrites them.
	retiredClones []retiredClone

	// owner is the Mounter that built the mount (an update of a mount
	// built with no file makes its tmpfs with it).
	owner *Mounter
	// gen numbers the files updates write, so that a file's name in the
	// tmpfs is never reused ("ID@gen"; see swap.go).
	gen uint64
	// retired are files an update took out of the container, still in
	// the tmpfs until reclaim overwrites them (once no open file holds
	// them), or Wipe does.
	retired []mounter.File
	// reclaimTimer runs reclaim while files are retired (nil: none due).
	reclaimTimer *time.Timer
	reclaimTries int
	// broken is set when the tmpfs could not be made read-only again:
	// nothing more is cloned from it.
	broken error
}

var _ mounter.Mount = (*Mount)(nil)

// zeros is what Wipe writes over the secrets.
var zeros [64 << 10]byte

// Wipe overwrites every file with zeros through the mount, truncates
// and unlinks it, and closes the mount fds. Once no container holds an
// attached clone the kernel frees the tmpfs; while one does, it sees empty
// files. Overwriting first matters: truncation alone returns the pages with
// the secret still in them. Wipe is idempotent.
func (m *Mount) Wipe() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.wipeLocked()
}

func (m *Mount) wipeLocked() error {
	if m.wiped {
		return nil
	}
	if m.reclaimTimer != nil {
		m.reclaimTimer.Stop()
		m.reclaimTimer = nil
	}
	var errs []error
	if m.fd >= 0 {
		// A mount made read-only by a failed build's last step is already
		// writable; otherwise flip it. Without it nothing can be
		// overwritten, so report that.
		if err := m.setWritable(true); err != nil {
			errs = append(errs, fmt.Errorf("wipe: %w", err))
		}
		for _, f := range slices.Concat(m.files, m.retired) {
			if err := wipeFile(m.fd, f); err != nil {
				errs = append(errs, err)
			}
		}
		// A container sees single files only: even one that could
		// remount its view writable (see the package doc) can change a
		// file's bytes, never add a name to the tmpfs. Wiping the plan's
		// files wipes all there is.
		// The last reference to the detached mount: the kernel frees the
		// tmpfs once no container holds a clone.
		if err := unix.Close(m.fd); err != nil {
			errs = append(errs, fmt.Errorf("wipe: close mount: %w", err))
		}
	}
	for _, fd := range m.clones {
		if err := wipeClone(fd); err != nil {
			errs = append(errs, err)
		}
		if err := unix.Close(fd); err != nil {
			errs = append(errs, fmt.Errorf("wipe: close recovered mount: %w", err))
		}
	}
	m.fd, m.clones, m.retired, m.wiped = -1, nil, nil, true
	m.cloneOf, m.retiredClones = nil, nil
	return errors.Join(errs...)
}

// overwrite writes size zero bytes over the file open for writing at fd,
// then truncates it: tmpfs overwrites in place, so the pages that held the
// secret hold zeros before truncation gives them back.
func overwrite(fd int, size int64) error {
	if err := zeroFill(fd, size); err != nil {
		return err
	}
	if err := unix.Ftruncate(fd, 0); err != nil {
		return fmt.Errorf("truncate: %w", err)
	}
	return nil
}

// zeroFill writes size zero bytes from the start of the file open at fd.
func zeroFill(fd int, size int64) error {
	for off := int64(0); off < size; {
		n := min(int64(len(zeros)), size-off)
		w, err := unix.Pwrite(fd, zeros[:n], off)
		if err != nil {
			return fmt.Errorf("overwrite: %w", err)
		}
		off += int64(w)
	}
	return nil
}

func wipeFile(dirfd int, f mounter.File) error {
	// What is not a regular file is only unlinked (see openRegular).
	fd, size, err := openRegular(dirfd, f.Name)
	if errors.Is(err, unix.ENOENT) {
		return nil // a failed build never created it
	}
	if err != nil {
		return fmt.Errorf("wipe secret %q: open: %w", f.SecretName, err)
	}
	if fd >= 0 {
		// A container that remounted its view writable may have grown the
		// file: overwrite all of it, not just the secret's size.
		err = overwrite(fd, max(size, f.Size))
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("wipe secret %q: %w", f.SecretName, err)
		}
	}
	if err := unix.Unlinkat(dirfd, f.Name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("wipe secret %q: unlink: %w", f.SecretName, err)
	}
	return nil
}

// openRegular opens name under dirfd for overwriting if, and only if, it is
// a regular file, and returns its size as the fd's fstat found it;
// otherwise it returns -1 and no error: a FIFO, socket or symlink holds no
// secret, only a name to unlink. The wipe runs on a tmpfs
// a container may have remounted writable (see the package doc) and so
// filled with whatever it likes, between any check and the open:
//   - O_NONBLOCK: opening a FIFO for writing blocks until someone opens it
//     for reading, which the container would never do, and the wipe (and the
//     agent's release behind it) would hang; with O_NONBLOCK the open fails
//     with ENXIO, or succeeds when the container holds a reader, which the
//     fstat below catches;
//   - O_NOFOLLOW: a symlink to a host file is never followed, so the wipe
//     never overwrites anything outside the tmpfs;
//   - the type is decided by fstat on the fd opened, never by a stat of the
//     name before the open, which a rename could change in between.
func openRegular(dirfd int, name string) (fd int, size int64, err error) {
	fd, err = unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENXIO):
		return -1, 0, nil // a symlink; a FIFO nobody reads, or a socket
	case err != nil:
		return -1, 0, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("stat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return -1, 0, nil
	}
	return fd, st.Size, nil
}
