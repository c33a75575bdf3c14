//go:build linux

package linux

import (
	"errors"
	"fmt"
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

// refuseShared refuses a mountpoint whose mount is shared: a mount attached
// on it would be copied to every peer of that mount. Kernels without
// statmount (before 6.8) cannot tell; the check is skipped there, as is
// the case of runc's default rootfs propagation (rslave), which never
// propagates out of the container.
func refuseShared(mp int, target string) error {
	var stx unix.Statx_t
	if err := unix.Statx(mp, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID_UNIQUE, &stx); err != nil {
		return fmt.Errorf("attach %s: statx mountpoint: %w", target, err)
	}
	if stx.Mask&unix.STATX_MNT_ID_UNIQUE == 0 {
		return nil // kernel before 6.8
	}
	req := mntIDReq{size: unix.MNT_ID_REQ_SIZE_VER0, mntID: stx.Mnt_id, param: statmountMntBasic}
	var sm statmountBasic
	_, _, errno := unix.Syscall6(unix.SYS_STATMOUNT, uintptr(unsafe.Pointer(&req)), uintptr(unsafe.Pointer(&sm)), unsafe.Sizeof(sm), 0, 0, 0)
	switch {
	case errno == unix.ENOSYS:
		return nil
	case errno != 0:
		return fmt.Errorf("attach %s: statmount: %w", target, errno)
	}
	if sm.mask&statmountMntBasic != 0 && sm.mntPropagation&unix.MS_SHARED != 0 {
		return fmt.Errorf("attach %s: %w", target, ErrSharedMountpoint)
	}
	return nil
}
