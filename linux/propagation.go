//go:build linux

package linux

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrSharedMountpoint is returned when a target lies on a shared mount:
// a mount attached there would propagate to the mount's peers, possibly in
// the host's namespace, where the secrets must never appear.
var ErrSharedMountpoint = errors.New("the target lies on a shared mount, whose mounts propagate to other namespaces (possibly the host's); choose a target outside it")

// mntIDReq and statmountBasic mirror the kernel's struct mnt_id_req and
// the head of struct statmount (linux/mount.h), up to the fields that
// STATMOUNT_MNT_BASIC fills.
type mntIDReq struct {
	size    uint32
	spare   uint32
	mntID   uint64
	param   uint64
	mntNsID uint64
}

type statmountBasic struct {
	size           uint32
	mntOpts        uint32
	mask           uint64
	sbDevMajor     uint32
	sbDevMinor     uint32
	sbMagic        uint64
	sbFlags        uint32
	fsType         uint32
	mntID          uint64
	mntParentID    uint64
	mntIDOld       uint32
	mntParentIDOld uint32
	mntAttr        uint64
	mntPropagation uint64
	mntPeerGroup   uint64
	mntMaster      uint64
	propagateFrom  uint64
	mntRoot        uint32
	mntPoint       uint32
	mntNsID        uint64
	spare          [50]uint64
}

const statmountMntBasic = 0x2 // STATMOUNT_MNT_BASIC

// haveStatmount reports whether the kernel has statmount and unique mount
// IDs (Linux 6.8), which tell a mount's propagation directly; before that,
// refuseShared reads mountinfo instead. A variable so that tests on a new
// kernel can force the mountinfo path.
var haveStatmount = sync.OnceValue(func() bool {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, "/", 0, unix.STATX_MNT_ID_UNIQUE, &stx); err != nil || stx.Mask&unix.STATX_MNT_ID_UNIQUE == 0 {
		return false
	}
	_, err := statmount(stx.Mnt_id)
	return err == nil
})

// procForMountinfo opens, in the caller's mount namespace, the procfs that
// refuseShared reads mountinfo from on kernels without statmount; -1 when
// the kernel has statmount. The caller opens it before entering a
// container's mount namespace, where /proc is the container's (another pid
// namespace, in which the agent's thread has no entry), and closes it.
func procForMountinfo() (int, error) {
	if haveStatmount() {
		return -1, nil
	}
	fd, err := unix.Open("/proc", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("attach: open /proc to check mount propagation: %w", err)
	}
	return fd, nil
}

func statmount(id uint64) (*statmountBasic, error) {
	req := mntIDReq{size: unix.MNT_ID_REQ_SIZE_VER0, mntID: id, param: statmountMntBasic}
	var sm statmountBasic
	_, _, errno := unix.Syscall6(unix.SYS_STATMOUNT, uintptr(unsafe.Pointer(&req)), uintptr(unsafe.Pointer(&sm)), unsafe.Sizeof(sm), 0, 0, 0)
	if errno != 0 {
		return nil, errno
	}
	return &sm, nil
}

// refuseShared refuses a mountpoint whose mount is shared: a mount attached
// on it would be copied to every peer of that mount. It asks statmount
// where the kernel has it (6.8), else reads the mount's optional fields in
// the calling thread's mountinfo through proc (procForMountinfo). runc's
// default rootfs propagation (rslave) passes: it never propagates out of
// the container.
func refuseShared(mp, proc int, target string) error {
	var shared bool
	var err error
	if haveStatmount() {
		shared, err = sharedByStatmount(mp)
	} else {
		shared, err = sharedByMountinfo(mp, proc)
	}
	if err != nil {
		return fmt.Errorf("attach %s: %w", target, err)
	}
	if shared {
		return fmt.Errorf("attach %s: %w", target, ErrSharedMountpoint)
	}
	return nil
}

func sharedByStatmount(mp int) (bool, error) {
	var stx unix.Statx_t
	if err := unix.Statx(mp, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID_UNIQUE, &stx); err != nil {
		return false, fmt.Errorf("statx mountpoint: %w", err)
	}
	if stx.Mask&unix.STATX_MNT_ID_UNIQUE == 0 {
		return false, errors.New("statx mountpoint: no unique mount ID")
	}
	sm, err := statmount(stx.Mnt_id)
	if err != nil {
		return false, fmt.Errorf("statmount: %w", err)
	}
	return sm.mask&statmountMntBasic != 0 && sm.mntPropagation&unix.MS_SHARED != 0, nil
}

// sharedByMountinfo finds the mount of mp in the calling thread's
// mountinfo (thread-self: the thread may be in a container's mount
// namespace that the rest of the process is not) and reports whether its
// optional fields hold "shared:N".
func sharedByMountinfo(mp, proc int) (bool, error) {
	if proc < 0 {
		return false, errors.New("no /proc to read mount propagation from")
	}
	id, err := mountIDOf(mp, proc)
	if err != nil {
		return false, err
	}
	fd, err := unix.Openat(proc, "thread-self/mountinfo", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("open mountinfo: %w", err)
	}
	f := os.NewFile(uintptr(fd), "mountinfo")
	defer f.Close()
	return mountinfoShared(f, id)
}

// mountinfoShared reports whether the mount with ID id in the mountinfo r
// (proc(5): "ID parent major:minor root mountpoint options [optional
// fields...] - fstype source superoptions") is shared.
func mountinfoShared(r io.Reader, id uint64) (bool, error) {
	want := strconv.FormatUint(id, 10)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 || fields[0] != want {
			continue
		}
		for _, opt := range fields[6:] {
			if opt == "-" {
				break
			}
			if strings.HasPrefix(opt, "shared:") {
				return true, nil
			}
		}
		return false, nil
	}
	if err := sc.Err(); err != nil {
		return false, fmt.Errorf("read mountinfo: %w", err)
	}
	return false, fmt.Errorf("mount %d is not in mountinfo", id)
}

// mountIDOf returns the mount ID (as mountinfo numbers it) of the mount fd
// is on: statx has it since 5.8, fdinfo before.
func mountIDOf(fd, proc int) (uint64, error) {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &stx); err == nil && stx.Mask&unix.STATX_MNT_ID != 0 {
		return stx.Mnt_id, nil
	}
	b, err := readAt(proc, "thread-self/fdinfo/"+strconv.Itoa(fd))
	if err != nil {
		return 0, fmt.Errorf("mount ID: %w", err)
	}
	return fdinfoMountID(b)
}

// fdinfoMountID reads the mnt_id line of a /proc/<pid>/fdinfo/<fd> file.
func fdinfoMountID(b []byte) (uint64, error) {
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "mnt_id:"); ok {
			id, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("mount ID: fdinfo: %w", err)
			}
			return id, nil
		}
	}
	return 0, errors.New("mount ID: not in fdinfo")
}

func readAt(dir int, name string) ([]byte, error) {
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	return io.ReadAll(f)
}
