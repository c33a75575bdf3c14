//go:build linux

package linux

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/mounter"
)

var _ mounter.Handoverer = (*Mount)(nil)

// Handover returns fresh read-only clones of the tmpfs to attach in c: one
// single-file clone per target, never a directory, so that nothing the
// container has beside its secrets is hidden. Ownership is first
// translated through c's user-namespace mappings. The caller closes every
// File (after sending it, or after AttachHandovers).
func (m *Mount) Handover(c mounter.Container) ([]mounter.Handover, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.wiped {
		return nil, errors.New("handover: the mount has been wiped")
	}
	if m.recovered {
		return nil, errors.New("handover: a recovered mount can only be wiped")
	}
	if len(m.files) == 0 {
		return nil, nil
	}
	if err := m.chownFor(c); err != nil {
		return nil, err
	}
	var hs []mounter.Handover
	fail := func(err error) ([]mounter.Handover, error) {
		for _, h := range hs {
			h.File.Close()
		}
		return nil, err
	}
	clone := func(name, target, secret string) error {
		fd, err := unix.OpenTree(m.fd, name, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
		if err != nil {
			return fmt.Errorf("handover: clone the mount for %s: %w", target, err)
		}
		// The clone inherits the read-only flag; set it on the clone
		// itself all the same, so that no path hands out a writable one.
		if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("handover: make the mount for %s read-only: %w", target, err)
		}
		hs = append(hs, mounter.Handover{Target: target, Secret: secret, File: os.NewFile(uintptr(fd), "lockbox-secrets:"+target)})
		return nil
	}
	for _, f := range m.files {
		if err := clone(f.Name, f.Target, f.SecretName); err != nil {
			return fail(err)
		}
	}
	return hs, nil
}

// chownFor gives the files the host ids that c's user namespace shows as
// the grants' ids.
func (m *Mount) chownFor(c mounter.Container) error {
	if len(c.UIDMappings) == 0 && len(c.GIDMappings) == 0 {
		return nil // Build already set the grants' ids
	}
	if err := m.setWritable(true); err != nil {
		return err
	}
	err := m.chownMapped(c)
	if rerr := m.setWritable(false); rerr != nil {
		// Never clone a writable mount for a container.
		return errors.Join(err, rerr)
	}
	return err
}

func (m *Mount) chownMapped(c mounter.Container) error {
	for _, f := range m.files {
		if err := m.chownOne(f, c); err != nil {
			return err
		}
	}
	return nil
}

// Attach makes the secrets appear in c. With c.Pid set, it enters the mount
// namespace of that process from a dedicated OS thread; c.Rootfs, if set, is
// opened inside that namespace, else the process's own root is used
// (/proc/<pid>/root). With c.Pid zero the caller is already in the
// container's mount namespace and c.Rootfs is required.
func (m *Mount) Attach(ctx context.Context, c mounter.Container) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	hs, err := m.Handover(c)
	if err != nil {
		return err
	}
	defer closeHandovers(hs)
	if len(hs) == 0 {
		return nil
	}
	// The agent's mountpoint file is known by its host path: stat it
	// before entering the container's namespace.
	own := ownBindAt(m.mountpointSource)
	if c.Pid == 0 {
		return attachHandovers(c.Rootfs, own, hs)
	}
	return attachByPid(c.Pid, c.Rootfs, own, hs)
}

func closeHandovers(hs []mounter.Handover) {
	for _, h := range hs {
		h.File.Close()
	}
}

// AttachHandovers attaches hs under rootfs from the caller's own mount
// namespace; it is what an OCI createContainer hook calls with the fds it
// received (cwd = the bundle's rootfs, before pivot_root). Each target is
// resolved inside rootfs without ever leaving it; a target that is already
// a mount root is refused unless it is a bind of the agent's mountpoint
// file (mounter.LinuxMountpointSource, looked up in the caller's
// namespace, where a hook still sees the host's paths). The caller still
// closes the Files.
func AttachHandovers(rootfs string, hs []mounter.Handover) error {
	return attachHandovers(rootfs, ownBindAt(mounter.LinuxMountpointSource), hs)
}

// AttachHandoversInto attaches hs at the root of process pid's mount
// namespace, as the agent's own Attach does (attachByPid); it is what the
// runtime shim calls with the fds the agent handed over before runc
// created the container. The caller still closes the Files.
func AttachHandoversInto(pid int, hs []mounter.Handover) error {
	if len(hs) == 0 {
		return nil
	}
	if pid <= 0 {
		return fmt.Errorf("attach: pid %d is not a container's process", pid)
	}
	return attachByPid(pid, "", ownBindAt(mounter.LinuxMountpointSource), hs)
}

// attachByPid attaches hs in the mount namespace of process pid, entered
// through a pidfd from a throwaway thread, under rootfs opened there (the
// process's own root when empty); own is the agent's mountpoint file. A
// process whose root is the caller's is refused: it is no container's, and
// the secrets would land on the host.
func attachByPid(pid int, rootfs string, own ownBind, hs []mounter.Handover) error {
	var host unix.Stat_t
	if err := unix.Stat("/", &host); err != nil {
		return fmt.Errorf("attach: stat own root: %w", err)
	}
	proc, err := procForMountinfo()
	if err != nil {
		return err
	}
	if proc >= 0 {
		defer unix.Close(proc)
	}
	return inMountNamespace(pid, rootfs, func(root int) error {
		// root was opened while the pidfd proved the pid still named
		// that process.
		var st unix.Stat_t
		if err := unix.Fstat(root, &st); err != nil {
			return fmt.Errorf("attach: stat root of pid %d: %w", pid, err)
		}
		if st.Dev == host.Dev && st.Ino == host.Ino {
			return fmt.Errorf("attach: pid %d has the caller's root: it is no container's process", pid)
		}
		return attachAll(root, proc, own, hs)
	})
}

func attachHandovers(rootfs string, own ownBind, hs []mounter.Handover) error {
	if rootfs == "" {
		return errors.New("attach: no container rootfs given")
	}
	root, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("attach: open container rootfs %s: %w", rootfs, err)
	}
	defer unix.Close(root)
	proc, err := procForMountinfo()
	if err != nil {
		return err
	}
	if proc >= 0 {
		defer unix.Close(proc)
	}
	return attachAll(root, proc, own, hs)
}

// attachAll attaches hs under root; proc is procForMountinfo's, own the
// agent's mountpoint file. The targets share one walk of the root, so
// directories common to several are resolved once.
func attachAll(root, proc int, own ownBind, hs []mounter.Handover) error {
	w := newRootWalk(root)
	defer w.close()
	for _, h := range hs {
		if err := attachOne(w, proc, own, h); err != nil {
			return err
		}
	}
	return nil
}

// attachOne moves the detached mount h.File onto h.Target inside w's root.
func attachOne(w *rootWalk, proc int, own ownBind, h mounter.Handover) error {
	return attachFd(w, proc, own, h.Target, h.Secret, int(h.File.Fd()))
}

// attachFd moves the detached mount fd onto target inside w's root; secret
// names the secret in errors (may be empty). The caller still closes fd.
func attachFd(w *rootWalk, proc int, own ownBind, target, secret string, fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("attach %s: stat the mount: %w", target, err)
	}
	dir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	mp, err := w.mountpoint(target, dir, own, secret)
	if err != nil {
		return err
	}
	defer unix.Close(mp)
	if err := refuseShared(mp, proc, target); err != nil {
		return err
	}
	if err := unix.MoveMount(fd, "", mp, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach %s: move mount: %w", target, err)
	}
	if dir {
		// The directory mount now covers whatever the walk resolved
		// below its target: look those up afresh.
		w.forget()
	}
	return nil
}
