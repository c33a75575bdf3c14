package windows

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"strings"

	"github.com/lockbox-project/lockbox/mounter"
)

// The agent's state directory holds:
//
//	<state>\secrets\                 ACL: Administrators and SYSTEM only
//	<state>\secrets\<token>\         one built plan
//	<state>\secrets\<token>\files\   the secret files, one per grant, named
//	                                 File.Name; mounted read-only into the
//	                                 container (Mount.Source)
//	<state>\secrets\<token>\container
//	                                 the container's ID, written by Attach,
//	                                 so that Recover can tell whose it is
//	<state>\secrets\<token>\files.json
//	                                 which file of files\ is at which target,
//	                                 and the names removed targets' links
//	                                 still name (secret names and IDs, never
//	                                 data),
//	                                 written by Attach and by every live
//	                                 update, read back by Recover
//	<state>\secrets\<token>\staging-<random>
//	                                 a live update's new file while it is
//	                                 written, before it replaces one in
//	                                 files\ (outside files\, so that the
//	                                 container never sees it half written)
//	<state>\secrets\<token>\retired-<random>
//	                                 an old file a live update replaced or
//	                                 removed, kept by this second name until
//	                                 no reader holds it, then overwritten
//
// The token is random: Build runs before the container is known, and a
// name nobody can predict cannot be prepared in advance.
const (
	secretsDirName = "secrets"
	filesDirName   = "files"
	ownerFileName  = "container"
	indexFileName  = "files.json"
	stagingPrefix  = "staging-"
	retiredPrefix  = "retired-"
)

var tokenRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// privateSDDL grants full control to Administrators (BA) and SYSTEM (SY),
// inherited by files and directories (OICI), and nothing to anyone else:
// P protects the DACL from the parent's inheritable entries.
const privateSDDL = "D:P(A;OICI;GA;;;BA)(A;OICI;GA;;;SY)"

// checkPlan refuses a plan that did not come from mounter.NewPlan for
// Windows: a Mounter writes names and follows targets from it, so it checks
// again what it relies on rather than trusting its caller.
func checkPlan(plan *mounter.Plan) error {
	if plan == nil {
		return errors.New("no plan")
	}
	if plan.OS != mounter.Windows {
		return fmt.Errorf("plan is for %q containers, not windows", plan.OS)
	}
	names := make(map[string]bool, len(plan.Files))
	for _, f := range plan.Files {
		if err := mounter.CheckWindowsName(f.Name); err != nil || strings.HasPrefix(f.Name, ".") {
			return fmt.Errorf("secret %q: file name %q is not a plain Windows name", f.SecretName, f.Name)
		}
		key := strings.ToUpper(f.Name)
		if names[key] {
			return fmt.Errorf("secret %q: file name %q appears twice", f.SecretName, f.Name)
		}
		names[key] = true
		if t, err := mounter.ResolveWindowsTarget(f.Target); err != nil || t != f.Target {
			return fmt.Errorf("secret %q: target %q is not a resolved Windows target", f.SecretName, f.Target)
		}
	}
	return nil
}

// targetElems returns a resolved target's components under C:\.
func targetElems(target string) []string {
	return strings.Split(strings.TrimPrefix(target, `C:\`), `\`)
}

// linkTarget is what the link at a file's target points at, as the
// container sees it.
func linkTarget(f mounter.File) string {
	return mounter.WindowsInternalSecretsDir + `\` + f.Name
}

// checkContainerID refuses an ID that cannot be stored in the owner file and
// read back as the same ID.
func checkContainerID(id string) error {
	if id == "" || len(id) > 256 {
		return fmt.Errorf("container ID %q must be 1 to 256 characters", id)
	}
	for _, r := range id {
		if r <= ' ' || r == 0x7f {
			return fmt.Errorf("container ID %q holds a space or a control character", id)
		}
	}
	return nil
}

// checkPrivateDACL reports whether an SDDL string (as read back from a
// directory or file) holds a protected DACL whose entries all allow access
// to Administrators or SYSTEM and nobody else. It reads what Windows stores,
// which may split an inheritable entry in two or map generic rights.
func checkPrivateDACL(sddl string) error {
	i := strings.Index(sddl, "D:")
	if i < 0 {
		return fmt.Errorf("no DACL in %q", sddl)
	}
	dacl := sddl[i+2:]
	if j := strings.Index(dacl, "S:"); j >= 0 {
		dacl = dacl[:j]
	}
	flags, aces, _ := strings.Cut(dacl, "(")
	if !strings.Contains(flags, "P") {
		return fmt.Errorf("DACL %q is not protected from inheritance", dacl)
	}
	seen := map[string]bool{}
	for _, ace := range strings.Split(strings.TrimSuffix("("+aces, ")"), ")(") {
		f := strings.Split(strings.TrimPrefix(ace, "("), ";")
		if len(f) < 6 {
			return fmt.Errorf("DACL %q: malformed entry %q", dacl, ace)
		}
		if f[0] != "A" {
			continue // a deny entry takes nothing away from the check
		}
		sid := f[5]
		if sid != "BA" && sid != "SY" && sid != "S-1-5-32-544" && sid != "S-1-5-18" {
			return fmt.Errorf("DACL %q allows %s", dacl, sid)
		}
		seen[sid] = true
	}
	if !(seen["BA"] || seen["S-1-5-32-544"]) || !(seen["SY"] || seen["S-1-5-18"]) {
		return fmt.Errorf("DACL %q does not allow both Administrators and SYSTEM", dacl)
	}
	return nil
}

// index is the content of files.json: what is at each target, and the
// names of the files a live update removed, by target, whose links the
// container still has (a reference added back gets its file there). It
// holds no secret data.
type index struct {
	Files   []indexFile       `json:"files"`
	Removed map[string]string `json:"removed,omitempty"`
}

// indexFile is one file of files.json.
type indexFile struct {
	Target     string `json:"target"`
	Name       string `json:"name"`
	SecretID   string `json:"secret_id"`
	SecretName string `json:"secret_name"`
	Size       int64  `json:"size"`
	Mode       uint32 `json:"mode"`
}

// encodeIndex is the content of files.json.
func encodeIndex(files []mounter.File, removed map[string]string) ([]byte, error) {
	ix := index{Files: make([]indexFile, len(files)), Removed: removed}
	for i, f := range files {
		ix.Files[i] = indexFile{Target: f.Target, Name: f.Name, SecretID: f.SecretID, SecretName: f.SecretName, Size: f.Size, Mode: uint32(f.Mode.Perm())}
	}
	return json.Marshal(ix)
}

// decodeIndex reads files.json back, refusing a name or target that a
// Mount would not have written: the names are opened and replaced in
// files\, so one that climbs out of it must never be taken.
func decodeIndex(b []byte) ([]mounter.File, map[string]string, error) {
	var ix index
	if err := json.Unmarshal(b, &ix); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", indexFileName, err)
	}
	check := func(target, name string) error {
		if err := mounter.CheckWindowsName(name); err != nil || strings.HasPrefix(name, ".") {
			return fmt.Errorf("%s: file name %q is not a plain Windows name", indexFileName, name)
		}
		if t, err := mounter.ResolveWindowsTarget(target); err != nil || t != target {
			return fmt.Errorf("%s: target %q is not a resolved Windows target", indexFileName, target)
		}
		return nil
	}
	files := make([]mounter.File, len(ix.Files))
	for i, f := range ix.Files {
		if err := check(f.Target, f.Name); err != nil {
			return nil, nil, err
		}
		files[i] = mounter.File{Target: f.Target, Name: f.Name, SecretID: f.SecretID, SecretName: f.SecretName, Size: f.Size, Mode: fs.FileMode(f.Mode).Perm()}
	}
	removed := make(map[string]string, len(ix.Removed))
	for target, name := range ix.Removed {
		if err := check(target, name); err != nil {
			return nil, nil, err
		}
		removed[target] = name
	}
	return files, removed, nil
}
