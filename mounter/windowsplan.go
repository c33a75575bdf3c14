package mounter

import (
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
)

// Paths inside a Windows container. They are the ones Docker uses, so that
// images built for swarm find their secrets where they expect them.
const (
	// WindowsSecretsDir is where a target without a drive letter lands.
	WindowsSecretsDir = `C:\ProgramData\Docker\secrets`
	// WindowsInternalSecretsDir is where the host directory holding a
	// container's secret files is mounted read-only. Every target is a
	// symbolic link into it. Applications must not rely on this path.
	WindowsInternalSecretsDir = `C:\ProgramData\Docker\internal\secrets`
)

// windowsMaxElem is the longest path component NTFS accepts, and
// windowsMaxPath the longest path Windows handles with long paths enabled.
const (
	windowsMaxElem = 255
	windowsMaxPath = 32767
)

// ValidateWindowsGrants checks the rules that only Windows containers have:
// no uid, gid or mode; targets that are plain paths on the container's C:
// drive; no two grants on one target, compared case-insensitively. Sizes
// are not looked at; NewPlan and ValidateReferences apply it with the
// common checks. The error is a *ValidationError naming the secret and the
// field.
func ValidateWindowsGrants(grants []Grant) error {
	_, err := newWindowsPlan(grants)
	return err
}

// newWindowsPlan validates grants for a Windows container. It checks only
// what is particular to Windows; NewPlan has checked the rest.
func newWindowsPlan(grants []Grant) (*Plan, error) {
	plan := &Plan{OS: Windows, Files: make([]File, 0, len(grants))}
	// Keys are upper-cased targets: NTFS compares names case-insensitively,
	// so C:\A and c:\a are one file.
	owner := make(map[string]string, len(grants))
	perSecret := make(map[string]int, len(grants))
	for _, g := range grants {
		f, err := windowsFile(g)
		if err != nil {
			return nil, err
		}
		key := strings.ToUpper(f.Target)
		if other, ok := owner[key]; ok {
			return nil, &ValidationError{Secret: g.SecretName, Field: "target", Value: f.Target,
				Reason: fmt.Sprintf("secret %q already has this target (Windows paths are case-insensitive)", other)}
		}
		owner[key] = g.SecretName
		// One file per grant, named by secret ID, as on Linux.
		perSecret[f.SecretID]++
		f.Name = f.SecretID
		if n := perSecret[f.SecretID]; n > 1 {
			f.Name += "~" + strconv.Itoa(n)
		}
		plan.Files = append(plan.Files, f)
		plan.Size += f.Size
	}
	// A target is a symbolic link, so it cannot also be a directory that
	// holds another target.
	for _, f := range plan.Files {
		t := f.Target
		for i := strings.LastIndexByte(t, '\\'); i > len(`C:`); i = strings.LastIndexByte(t[:i], '\\') {
			if other, ok := owner[strings.ToUpper(t[:i])]; ok {
				return nil, &ValidationError{Secret: f.SecretName, Field: "target", Value: f.Target,
					Reason: fmt.Sprintf("it lies inside %q, the target of secret %q", t[:i], other)}
			}
		}
	}
	return plan, nil
}

// windowsFile validates one grant and resolves its target.
func windowsFile(g Grant) (File, error) {
	fail := func(field, value, reason string) (File, error) {
		return File{}, &ValidationError{Secret: g.SecretName, Field: field, Value: value, Reason: reason}
	}
	const noOwner = "Windows containers support no uid, gid or mode: their secrets are readable by Administrators and SYSTEM only"
	switch {
	case g.UID != "":
		return fail("uid", g.UID, noOwner)
	case g.GID != "":
		return fail("gid", g.GID, noOwner)
	case g.Mode != 0:
		return fail("mode", fmt.Sprintf("%#o", g.Mode), noOwner)
	}
	// The ID names a file in the internal directory on the host: on top of
	// the common rules, Windows must not read it as a device name or drop a
	// trailing dot.
	if g.SecretID != "" && (checkWindowsElem(g.SecretID) != nil || g.SecretID[0] == '.') {
		return fail("id", g.SecretID, "a secret ID on Windows must be a plain file name")
	}
	target := g.Target
	if target == "" {
		target = g.SecretName
	}
	resolved, err := ResolveWindowsTarget(target)
	if err != nil {
		return fail("target", target, err.Error())
	}
	return File{
		SecretID:   g.SecretID,
		SecretName: g.SecretName,
		Target:     resolved,
		// The internal directory is mounted read-only and its ACL, not
		// these bits, decides who reads; 0444 says what a reader sees.
		Mode:   fs.FileMode(0o444),
		Size:   g.Size,
		Signal: g.Signal,
	}, nil
}

// ResolveWindowsTarget turns an operator's target into an absolute, clean
// path on the container's C: drive, with backslashes and an upper-case
// drive letter: empty is refused, relative is under WindowsSecretsDir,
// absolute (C:\...) is taken as given. A ".." that climbs out of the
// secrets directory (relative) or the drive (absolute), UNC and device
// paths, drive-relative and rooted-without-drive paths, other drives,
// alternate data streams, reserved device names and names Windows would
// alter (trailing dot or space) are refused.
func ResolveWindowsTarget(target string) (string, error) {
	p, err := parseWindowsPath(target)
	if err != nil {
		return "", err
	}
	var elems []string
	switch {
	case p.drive == 0 && p.rooted:
		// \foo means "foo at the root of the current drive", which
		// depends on a process's state; /run/secrets/x is a Linux target.
		return "", fmt.Errorf("a rooted path needs a drive letter: write C:%s, or a path relative to %s", target, WindowsSecretsDir)
	case p.drive == 0:
		elems, err = cleanWindowsElems(windowsSecretsElems(), p.elems)
	case p.drive != 'C':
		// The symbolic link is created in the container's root
		// filesystem, which is its C: drive; other drives are volumes.
		return "", fmt.Errorf("drive %c: is not the container's root filesystem; only C: can hold secrets", p.drive)
	default:
		elems, err = cleanWindowsElems(nil, p.elems)
	}
	if err != nil {
		return "", err
	}
	if len(elems) == 0 {
		return "", errors.New("it names the root of the drive, not a file")
	}
	resolved := `C:\` + strings.Join(elems, `\`)
	if len(resolved) > windowsMaxPath {
		return "", fmt.Errorf("it is longer than %d characters", windowsMaxPath)
	}
	if windowsPathOverlaps(resolved, WindowsInternalSecretsDir) {
		return "", fmt.Errorf("it overlaps %s, where the secret files are mounted", WindowsInternalSecretsDir)
	}
	if strings.EqualFold(resolved, WindowsSecretsDir) {
		return "", fmt.Errorf("it names the directory %s, not a file in it", WindowsSecretsDir)
	}
	return resolved, nil
}

// windowsPathOverlaps reports whether one of two clean paths is the other
// or inside it, compared as Windows does, ignoring case.
func windowsPathOverlaps(a, b string) bool {
	a, b = strings.ToUpper(a), strings.ToUpper(b)
	return a == b || strings.HasPrefix(a, b+`\`) || strings.HasPrefix(b, a+`\`)
}

func windowsSecretsElems() []string {
	return strings.Split(WindowsSecretsDir[len(`C:\`):], `\`)
}

// windowsPath is a Windows path taken apart. It holds no UNC, device or
// drive-relative form: parseWindowsPath refuses them.
type windowsPath struct {
	drive  byte // upper-case drive letter, or 0 when there is none
	rooted bool // a separator follows the drive (or starts the path)
	elems  []string
}

// parseWindowsPath splits s the way Win32 reads a path, accepting both
// separators, and refuses every form whose meaning is not a plain file on a
// local drive. It leaves "." and ".." for cleanWindowsElems.
func parseWindowsPath(s string) (windowsPath, error) {
	var p windowsPath
	if s == "" {
		return p, errors.New("it is empty")
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return p, errors.New("it contains a control character")
		}
	}
	isSep := func(c byte) bool { return c == '\\' || c == '/' }
	if len(s) >= 2 && isSep(s[0]) && isSep(s[1]) {
		return p, errors.New(`UNC and device paths (\\server\share, \\?\, \\.\) are not allowed; use a local path`)
	}
	rest := s
	if len(s) >= 2 && s[1] == ':' && isASCIILetter(s[0]) {
		p.drive = s[0] &^ 0x20 // upper case
		rest = s[2:]
		if rest == "" || !isSep(rest[0]) {
			return p, fmt.Errorf(`a drive-relative path (%c:name) depends on a process's current directory; write %c:\name`, p.drive, p.drive)
		}
	}
	p.rooted = rest != "" && isSep(rest[0])
	for _, e := range strings.FieldsFunc(rest, func(r rune) bool { return r == '\\' || r == '/' }) {
		if err := checkWindowsElem(e); err != nil {
			return p, err
		}
		p.elems = append(p.elems, e)
	}
	return p, nil
}

func isASCIILetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// CheckWindowsName reports whether name is a plain file name that Win32
// neither alters (a trailing dot or space is dropped) nor reads as a device,
// a stream or a pattern. "." and ".." are not names.
func CheckWindowsName(name string) error {
	if name == "" || name == "." || name == ".." {
		return fmt.Errorf("%q is not a file name", name)
	}
	return checkWindowsElem(name)
}

// checkWindowsElem refuses a non-empty path component that Windows would
// read as something other than a plain name.
func checkWindowsElem(e string) error {
	if e == "." || e == ".." {
		return nil
	}
	if len(e) > windowsMaxElem {
		return fmt.Errorf("a component is longer than %d bytes", windowsMaxElem)
	}
	for _, r := range e {
		if r < 0x20 || r == 0x7f {
			return errors.New("it contains a control character")
		}
	}
	if strings.ContainsAny(e, `\/`) {
		return fmt.Errorf("%q holds a path separator", e)
	}
	if strings.ContainsRune(e, ':') {
		return fmt.Errorf("%q names an alternate data stream: ':' is allowed only after the drive letter", e)
	}
	if i := strings.IndexAny(e, `<>"|?*`); i >= 0 {
		return fmt.Errorf("%q holds %q, which Windows does not allow in a file name", e, e[i])
	}
	// Windows strips trailing dots and spaces, so "a." and "a" would be one
	// file behind the duplicate check's back.
	if last := e[len(e)-1]; last == '.' || last == ' ' {
		return fmt.Errorf("%q ends in a dot or a space, which Windows drops", e)
	}
	if isWindowsReserved(e) {
		return fmt.Errorf("%q is a reserved device name", e)
	}
	return nil
}

// isWindowsReserved reports whether Win32 maps a file name to a device: the
// name before the first dot, less trailing spaces, is a DOS device name
// (so NUL.txt is NUL).
func isWindowsReserved(name string) bool {
	base, _, _ := strings.Cut(name, ".")
	base = strings.ToUpper(strings.TrimRight(base, " "))
	switch base {
	case "CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "CLOCK$":
		return true
	}
	if strings.HasPrefix(base, "COM") || strings.HasPrefix(base, "LPT") {
		switch base[3:] {
		case "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "¹", "²", "³":
			return true
		}
	}
	return false
}

// cleanWindowsElems applies elems to base, resolving "." and "..". A ".."
// that would climb above base is refused rather than clamped: for a
// relative target base is the secrets directory, for an absolute one the
// drive root, and either way the operator asked for something else.
func cleanWindowsElems(base, elems []string) ([]string, error) {
	out := append([]string(nil), base...)
	for _, e := range elems {
		switch e {
		case ".":
		case "..":
			if len(out) == len(base) {
				if len(base) == 0 {
					return nil, errors.New("'..' climbs above the drive root")
				}
				return nil, fmt.Errorf("'..' climbs out of %s", WindowsSecretsDir)
			}
			out = out[:len(out)-1]
		default:
			out = append(out, e)
		}
	}
	return out, nil
}
