package windows

import (
	"errors"
	"fmt"
	"strings"

	"github.com/lockbox-project/lockbox/mounter"
)

// entryKind is what a path inside a container's root filesystem names.
type entryKind int

const (
	kindMissing entryKind = iota
	kindDir
	kindFile
	kindLink  // a symbolic link or a junction, whose target can be read
	kindOther // any other reparse point (a deduplicated file, a cloud file...)
)

// rootFS answers questions about paths inside one container's root
// filesystem, named by their components under the root. It never follows a
// link in the last component.
type rootFS interface {
	lstat(elems []string) (kind entryKind, linkTarget string, err error)
}

// maxLinks is how many reparse points Windows follows in one path before it
// gives up (STATUS_REPARSE_POINT_NOT_RESOLVED past 63).
const maxLinks = 63

// ErrOutsideRoot is returned when a link in a container's filesystem points
// somewhere that cannot be read inside its root: another volume, a UNC or a
// device path.
var ErrOutsideRoot = errors.New("link points outside the container's root filesystem")

// resolveInRoot resolves elems inside a container's root filesystem, as the
// container would see them with its root as C:\, following links that the
// image holds but never leaving the root: an absolute link target starts
// again at the root, and ".." at the root stays there. It returns the
// components of the resolved path, which exist as directories (or files)
// up to the first missing one.
//
// It is the Windows counterpart of filepath-securejoin: Windows resolves
// ".." in a path and in a link's target lexically, before following links,
// which is what this does too.
func resolveInRoot(fsys rootFS, elems []string) ([]string, error) {
	var out []string
	rest := append([]string(nil), elems...)
	links := 0
	for len(rest) > 0 {
		e := rest[0]
		rest = rest[1:]
		switch e {
		case "", ".":
			continue
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			continue
		}
		cand := append(out[:len(out):len(out)], e)
		kind, target, err := fsys.lstat(cand)
		if err != nil {
			return nil, err
		}
		switch kind {
		case kindMissing, kindDir:
			out = cand
		case kindFile:
			if len(rest) > 0 {
				return nil, fmt.Errorf("%s is a file, not a directory", containerPath(cand))
			}
			out = cand
		case kindLink:
			links++
			if links > maxLinks {
				return nil, fmt.Errorf("%s: more than %d links", containerPath(cand), maxLinks)
			}
			abs, telems, err := parseLinkTarget(target)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", containerPath(cand), err)
			}
			if abs {
				out = nil
			}
			rest = append(telems, rest...)
		default:
			return nil, fmt.Errorf("%s is a reparse point that is neither a link nor a junction", containerPath(cand))
		}
	}
	return out, nil
}

// parseLinkTarget reads a link's target as Windows would inside the
// container: C:\x and \x from the root, x relative to the link's
// directory. Anything that names another volume, a UNC share or a device is
// refused with ErrOutsideRoot.
func parseLinkTarget(t string) (abs bool, elems []string, err error) {
	isSep := func(c byte) bool { return c == '\\' || c == '/' }
	switch {
	case t == "":
		return false, nil, errors.New("link has an empty target")
	case len(t) >= 2 && isSep(t[0]) && (isSep(t[1]) || t[1] == '?'):
		// \\server\share, \\?\Volume{...}\, \\.\device, \??\C:\
		return false, nil, fmt.Errorf("%w: %q", ErrOutsideRoot, t)
	case len(t) >= 2 && t[1] == ':':
		if t[0] != 'C' && t[0] != 'c' || len(t) > 2 && !isSep(t[2]) {
			return false, nil, fmt.Errorf("%w: %q", ErrOutsideRoot, t)
		}
		abs, t = true, t[2:]
	case isSep(t[0]):
		abs = true
	}
	for _, e := range strings.FieldsFunc(t, func(r rune) bool { return r == '\\' || r == '/' }) {
		if strings.ContainsRune(e, ':') {
			return false, nil, fmt.Errorf("%w: %q names a stream or a drive", ErrOutsideRoot, t)
		}
		// A name Win32 would change or read as a device could resolve
		// differently on the host than the walk assumes.
		if e != "." && e != ".." {
			if err := mounter.CheckWindowsName(e); err != nil {
				return false, nil, fmt.Errorf("link target %q: %w", t, err)
			}
		}
		elems = append(elems, e)
	}
	return abs, elems, nil
}

// containerPath is how the container names the path elems under its root.
func containerPath(elems []string) string {
	return `C:\` + strings.Join(elems, `\`)
}
