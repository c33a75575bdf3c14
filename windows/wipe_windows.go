package windows

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	winapi "golang.org/x/sys/windows"
)

// wipeTree overwrites every regular file under dir with zeros, flushes it
// to disk and deletes it, then removes the directories. Links and other
// reparse points are removed themselves, never followed. A missing dir is
// not an error, so that a wipe can be retried.
//
// It does not use os.RemoveAll: that would delete without overwriting.
func wipeTree(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() || fi.Mode()&(fs.ModeSymlink|fs.ModeIrregular) != 0 {
		return removeEntry(dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("wipe %s: %w", dir, err)
	}
	var errs []error
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		switch t := e.Type(); {
		case t&(fs.ModeSymlink|fs.ModeIrregular) != 0:
			errs = append(errs, removeEntry(p))
		case t.IsDir():
			errs = append(errs, wipeTree(p))
		case t.IsRegular():
			errs = append(errs, wipeFile(p))
		default:
			errs = append(errs, removeEntry(p))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return removeEntry(dir)
}

// wipeBlock is the size of the zero buffer a wipe writes with.
const wipeBlock = 64 << 10

// wipeFile overwrites a file with zeros through a handle that does not
// follow a reparse point, writes it through to the disk, and deletes it.
// On NTFS this overwrites the clusters that held the data (short of
// compression, sparse files, snapshots and SSD remapping; BitLocker is the
// answer to those).
func wipeFile(path string) error {
	p, err := winapi.UTF16PtrFromString(path)
	if err != nil {
		return fmt.Errorf("wipe %s: %w", path, err)
	}
	h, err := winapi.CreateFile(p, winapi.GENERIC_WRITE, 0, nil, winapi.OPEN_EXISTING,
		winapi.FILE_FLAG_OPEN_REPARSE_POINT|winapi.FILE_FLAG_WRITE_THROUGH, 0)
	if err != nil {
		return fmt.Errorf("wipe %s: %w", path, err)
	}
	f := os.NewFile(uintptr(h), path)
	werr := overwrite(f)
	if err := f.Close(); werr == nil && err != nil {
		werr = err
	}
	if werr != nil {
		return fmt.Errorf("wipe %s: %w", path, werr)
	}
	return removeEntry(path)
}

func overwrite(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	zero := make([]byte, min(fi.Size(), wipeBlock))
	for left := fi.Size(); left > 0; {
		n, err := f.Write(zero[:min(left, int64(len(zero)))])
		if err != nil {
			return err
		}
		left -= int64(n)
	}
	return f.Sync() // FlushFileBuffers: the zeros reach the disk before the delete
}

// removeEntry removes one file, link or empty directory without following
// it.
func removeEntry(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
