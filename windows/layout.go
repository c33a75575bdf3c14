package windows

import (
	"errors"
	"fmt"
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
//
// The token is random: Build runs before the container is known, and a
// name nobody can predict cannot be prepared in advance.
const (
	secretsDirName = "secrets"
	filesDirName   = "files"
	ownerFileName  = "container"
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
