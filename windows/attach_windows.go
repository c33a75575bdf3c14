package windows

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	winapi "golang.org/x/sys/windows"

	"github.com/lockbox-project/lockbox/mounter"
)

// hostRoot is a container's root filesystem seen from the host.
type hostRoot string

func (r hostRoot) lstat(elems []string) (entryKind, string, error) {
	p := filepath.Join(append([]string{string(r)}, elems...)...)
	fi, err := os.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return kindMissing, "", nil
	case err != nil:
		return 0, "", err
	case fi.Mode()&(fs.ModeSymlink|fs.ModeIrregular) != 0:
		// Symbolic links and junctions can be read; any other reparse
		// point (ModeIrregular) cannot, and is refused.
		t, err := os.Readlink(p)
		if err != nil {
			return kindOther, "", nil
		}
		return kindLink, t, nil
	case fi.IsDir():
		return kindDir, "", nil
	case fi.Mode().IsRegular():
		return kindFile, "", nil
	default:
		return kindOther, "", nil
	}
}

// attachLink makes f's target, inside the root filesystem at rootfs, a
// file symbolic link to f's file in the internal directory.
func attachLink(rootfs string, f mounter.File) error {
	elems := targetElems(f.Target)
	parent, err := resolveInRoot(hostRoot(rootfs), elems[:len(elems)-1])
	if err != nil {
		return err
	}
	dir := rootfs
	for _, e := range parent {
		dir = filepath.Join(dir, e)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		// resolveInRoot replaced every link on the way by what it
		// points at; one here now was planted after it looked.
		fi, err := os.Lstat(dir)
		if err != nil {
			return err
		}
		if !fi.IsDir() || fi.Mode()&(fs.ModeSymlink|fs.ModeIrregular) != 0 {
			return fmt.Errorf("%s changed while it was resolved", dir)
		}
	}
	leaf := filepath.Join(dir, elems[len(elems)-1])
	fi, err := os.Lstat(leaf)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	case fi.Mode()&fs.ModeSymlink != 0:
		// A link from an earlier start of this container, or one the
		// image put there: the link itself goes, never what it names.
		if err := os.Remove(leaf); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%s already exists in the container's filesystem", containerPath(append(parent, elems[len(elems)-1])))
	}
	return createFileSymlink(leaf, linkTarget(f))
}

// createFileSymlink creates a file symbolic link. It does not use
// os.Symlink, which makes a directory link when the target happens to be a
// directory on the host: the target is a path in the container.
func createFileSymlink(link, target string) error {
	l, err := winapi.UTF16PtrFromString(link)
	if err != nil {
		return err
	}
	t, err := winapi.UTF16PtrFromString(target)
	if err != nil {
		return err
	}
	err = winapi.CreateSymbolicLink(l, t, symlinkAllowUnprivilegedCreate)
	if errors.Is(err, winapi.ERROR_INVALID_PARAMETER) {
		// Windows before 10 1703 does not know the flag; the agent runs
		// with the privilege the flag would spare it.
		err = winapi.CreateSymbolicLink(l, t, 0)
	}
	if err != nil {
		return &os.LinkError{Op: "symlink", Old: target, New: link, Err: err}
	}
	return nil
}

// symlinkAllowUnprivilegedCreate is SYMBOLIC_LINK_FLAG_ALLOW_UNPRIVILEGED_CREATE.
const symlinkAllowUnprivilegedCreate = 0x2
