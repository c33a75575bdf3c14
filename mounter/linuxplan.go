package mounter

import (
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

const (
	// defaultMode is swarm's default for a secret file.
	defaultMode fs.FileMode = 0o444
	// pathMax and nameMax are Linux's PATH_MAX and NAME_MAX.
	pathMax = 4095
	nameMax = 255
)

// forbiddenRoots are kernel file systems a secret must not be mounted over:
// a bind mount there could mask a kernel interface the runtime relies on.
var forbiddenRoots = []string{"/proc", "/sys"}

// newLinuxPlan validates grants for a Linux container. checkCommon has
// already accepted each grant's ID, name and size.
func newLinuxPlan(grants []Grant) (*Plan, error) {
	p := &Plan{OS: Linux, Files: make([]File, 0, len(grants))}
	files := make(map[string]string, len(grants)) // target -> secret name
	dirs := make(map[string]string)               // ancestor dir -> secret name
	seen := make(map[string]int, len(grants))     // secret ID -> grants so far
	for _, g := range grants {
		target, err := linuxTarget(g)
		if err != nil {
			return nil, err
		}
		if other, ok := files[target]; ok {
			return nil, targetErr(g, target, fmt.Sprintf("secret %q has the same target", other))
		}
		if other, ok := dirs[target]; ok {
			return nil, targetErr(g, target, fmt.Sprintf("it is a directory holding the target of secret %q", other))
		}
		for d := path.Dir(target); d != "/"; d = path.Dir(d) {
			if other, ok := files[d]; ok {
				return nil, targetErr(g, target, fmt.Sprintf("it lies under %q, the target of secret %q", d, other))
			}
		}
		files[target] = g.SecretName
		for d := path.Dir(target); d != "/"; d = path.Dir(d) {
			if _, ok := dirs[d]; !ok {
				dirs[d] = g.SecretName
			}
		}

		uid, ok := parseID(g.UID)
		if !ok {
			return nil, &ValidationError{Secret: g.SecretName, Field: "uid", Value: g.UID, Reason: "a uid is a decimal number from 0 to 4294967294"}
		}
		gid, ok := parseID(g.GID)
		if !ok {
			return nil, &ValidationError{Secret: g.SecretName, Field: "gid", Value: g.GID, Reason: "a gid is a decimal number from 0 to 4294967294"}
		}
		if g.Mode > 0o777 {
			return nil, &ValidationError{Secret: g.SecretName, Field: "mode", Value: fmt.Sprintf("%#o", g.Mode), Reason: "a mode holds permission bits only (at most 0777)"}
		}
		mode := fs.FileMode(g.Mode)
		if mode == 0 {
			mode = defaultMode
		}

		seen[g.SecretID]++
		name := g.SecretID
		if n := seen[g.SecretID]; n > 1 {
			// '~' never occurs in an ID, so this cannot collide.
			name += "~" + strconv.Itoa(n)
		}
		p.Files = append(p.Files, File{
			SecretID: g.SecretID, SecretName: g.SecretName, Name: name,
			Target: target, UID: uid, GID: gid, Mode: mode, Size: g.Size, Signal: g.Signal,
		})
		p.Size += g.Size
	}
	return p, nil
}

// linuxTarget returns the absolute, clean target of g inside the container.
// It refuses rather than repairs anything that could mean two things: a
// ".." element, a trailing slash, control characters.
func linuxTarget(g Grant) (string, error) {
	t := g.Target
	if t == "" {
		t = g.SecretName
	}
	if len(t) > pathMax {
		return "", targetErr(g, t, fmt.Sprintf("a target is at most %d bytes", pathMax))
	}
	for i := 0; i < len(t); i++ {
		if t[i] < 0x20 || t[i] == 0x7f {
			return "", targetErr(g, t, "a target holds no NUL or control characters")
		}
	}
	if strings.HasSuffix(t, "/") {
		return "", targetErr(g, t, "a target names a file, not a directory")
	}
	for _, e := range strings.Split(t, "/") {
		if e == ".." {
			return "", targetErr(g, t, `a target holds no ".." element`)
		}
		if len(e) > nameMax {
			return "", targetErr(g, t, fmt.Sprintf("a path element is at most %d bytes", nameMax))
		}
	}
	var abs string
	if path.IsAbs(t) {
		abs = path.Clean(t)
	} else {
		abs = path.Join(LinuxSecretsDir, t)
	}
	if abs == "/" || abs == LinuxSecretsDir || abs == path.Dir(LinuxSecretsDir) {
		return "", targetErr(g, t, "a target names a file, not a directory")
	}
	for _, r := range forbiddenRoots {
		if abs == r || strings.HasPrefix(abs, r+"/") {
			return "", targetErr(g, t, fmt.Sprintf("a target may not lie under %s", r))
		}
	}
	return abs, nil
}

func targetErr(g Grant, value, reason string) error {
	return &ValidationError{Secret: g.SecretName, Field: "target", Value: value, Reason: reason}
}
