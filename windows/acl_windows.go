package windows

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"unsafe"

	winapi "golang.org/x/sys/windows"
)

// privateAttributes returns security attributes carrying privateSDDL, so
// that a directory or file is created with its ACL in place: there is no
// moment when it has the parent's.
func privateAttributes() (*winapi.SecurityAttributes, error) {
	sd, err := winapi.SecurityDescriptorFromString(privateSDDL)
	if err != nil {
		return nil, fmt.Errorf("parse SDDL %s: %w", privateSDDL, err)
	}
	sa := &winapi.SecurityAttributes{SecurityDescriptor: sd}
	sa.Length = uint32(unsafe.Sizeof(*sa))
	return sa, nil
}

// mkdirPrivate creates dir with the private ACL. It fails if dir exists.
func mkdirPrivate(dir string, sa *winapi.SecurityAttributes) error {
	p, err := winapi.UTF16PtrFromString(dir)
	if err != nil {
		return fmt.Errorf("mkdir %s: %w", dir, err)
	}
	if err := winapi.CreateDirectory(p, sa); err != nil {
		return &fs.PathError{Op: "mkdir", Path: dir, Err: err}
	}
	return nil
}

// ensurePrivateDir makes dir a directory with the private ACL: it creates
// it, or, when it exists, checks that it is a real directory (not a link
// or junction someone planted) and sets the ACL again, repairing one that
// was loosened while the agent was down.
func ensurePrivateDir(dir string, sa *winapi.SecurityAttributes) error {
	err := mkdirPrivate(dir, sa)
	if err == nil || !errors.Is(err, fs.ErrExist) {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() || fi.Mode()&(fs.ModeSymlink|fs.ModeIrregular) != 0 {
		return fmt.Errorf("%s exists and is not a plain directory", dir)
	}
	dacl, _, err := sa.SecurityDescriptor.DACL()
	if err != nil {
		return fmt.Errorf("DACL of %s: %w", privateSDDL, err)
	}
	err = winapi.SetNamedSecurityInfo(dir, winapi.SE_FILE_OBJECT,
		winapi.DACL_SECURITY_INFORMATION|winapi.PROTECTED_DACL_SECURITY_INFORMATION, nil, nil, dacl, nil)
	if err != nil {
		return fmt.Errorf("set ACL of %s: %w", dir, err)
	}
	return nil
}

// createSecretFile creates a new file for a secret's bytes, with the
// private ACL. FILE_ATTRIBUTE_TEMPORARY asks the cache manager to keep the
// data in memory rather than write it back to disk while memory allows;
// NOT_CONTENT_INDEXED keeps the search indexer away from it.
func createSecretFile(path string, sa *winapi.SecurityAttributes) (*os.File, error) {
	return createSecretFileAccess(path, sa, winapi.GENERIC_WRITE)
}

// createSecretFileAccess is createSecretFile with the handle's access
// rights: a live update's new file is also renamed (DELETE) through it.
func createSecretFileAccess(path string, sa *winapi.SecurityAttributes, access uint32) (*os.File, error) {
	p, err := winapi.UTF16PtrFromString(path)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	h, err := winapi.CreateFile(p, access, 0, sa, winapi.CREATE_NEW,
		winapi.FILE_ATTRIBUTE_TEMPORARY|winapi.FILE_ATTRIBUTE_NOT_CONTENT_INDEXED, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "create", Path: path, Err: err}
	}
	return os.NewFile(uintptr(h), path), nil
}
