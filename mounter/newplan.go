package mounter

import (
	"fmt"
	"strconv"

	"github.com/lockbox-project/lockbox/api/validation"
)

// Limits bound what one plan may hold. A plan's files live in memory on the
// node (a tmpfs on Linux), so their sum is capped per container.
type Limits struct {
	// MaxTotalSize caps the sum of a plan's file sizes, in bytes.
	MaxTotalSize int64
}

const (
	// MaxSecretSize is the exclusive upper bound of one secret's size
	// (validation.MaxSecretSize).
	MaxSecretSize = validation.MaxSecretSize
	// DefaultMaxTotalSize is the default cap of a plan's total size.
	DefaultMaxTotalSize = 64 << 20
)

// DefaultLimits are the limits NewPlan applies.
var DefaultLimits = Limits{MaxTotalSize: DefaultMaxTotalSize}

// NewPlan validates grants for a container of the given platform under
// DefaultLimits. See Limits.NewPlan.
func NewPlan(os OS, grants []Grant) (*Plan, error) {
	return DefaultLimits.NewPlan(os, grants)
}

// NewPlan validates grants for a container of the given platform and
// returns what the container gets. Every refusal is a *ValidationError naming
// the secret and the field. It performs no system call.
func (l Limits) NewPlan(os OS, grants []Grant) (*Plan, error) {
	var total int64
	for _, g := range grants {
		if err := checkCommon(g); err != nil {
			return nil, err
		}
		total += g.Size
	}
	if l.MaxTotalSize > 0 && total > l.MaxTotalSize {
		return nil, &ValidationError{Field: "size", Value: strconv.FormatInt(total, 10),
			Reason: fmt.Sprintf("the container's secrets total more than the cap of %d bytes", l.MaxTotalSize)}
	}
	switch os {
	case Linux:
		return newLinuxPlan(grants)
	case Windows:
		return newWindowsPlan(grants)
	default:
		return nil, &ValidationError{Field: "os", Value: string(os), Reason: `the platform must be "linux" or "windows"`}
	}
}

// ValidateReferences checks a service's secret references as the
// managers receive them (names, targets, owners and modes; Size is not
// looked at: sizes are checked when a secret is created) against the rules
// a node will apply to them on os, so that a reference no node could mount
// is refused when the service is created or updated rather than when a
// container starts. It is pure: no plan is kept, no system call made. The
// error is a *ValidationError naming the secret and the field.
func ValidateReferences(os OS, refs []Grant) error {
	grants := make([]Grant, len(refs))
	for i, r := range refs {
		r.Size = 1
		grants[i] = r
	}
	// No total cap: it depends on the secrets' sizes.
	_, err := Limits{}.NewPlan(os, grants)
	return err
}

// ValidationError is a grant (or a whole plan, when Secret is empty) that a
// plan refuses. It never holds secret data: only names and the offending
// field's value.
type ValidationError struct {
	// Secret is the secret's name, or its ID when the name is the problem.
	Secret string
	// Field is the grant field at fault: "id", "name", "target", "uid",
	// "gid", "mode", "size" or "os".
	Field  string
	Value  string
	Reason string
}

func (e *ValidationError) Error() string {
	if e.Secret == "" {
		return fmt.Sprintf("invalid %s %q: %s", e.Field, e.Value, e.Reason)
	}
	return fmt.Sprintf("secret %q: invalid %s %q: %s", e.Secret, e.Field, e.Value, e.Reason)
}

// checkCommon holds the rules that do not depend on the platform.
func checkCommon(g Grant) error {
	if !validID(g.SecretID) {
		return &ValidationError{Secret: g.SecretName, Field: "id", Value: g.SecretID,
			Reason: "a secret ID is 1 to 128 letters, digits, '-', '_' or '.', not starting with '.'"}
	}
	if !validation.ValidName(g.SecretName) {
		return &ValidationError{Secret: g.SecretID, Field: "name", Value: g.SecretName,
			Reason: "a secret name is " + validation.NameRule}
	}
	if !validation.ValidSecretSize(g.Size) {
		return &ValidationError{Secret: g.SecretName, Field: "size", Value: strconv.FormatInt(g.Size, 10),
			Reason: fmt.Sprintf("a secret holds 1 to %d bytes", MaxSecretSize-1)}
	}
	return nil
}

// validID reports whether id can name a file in a mounter's private storage
// as is: no separator, no dot-dot, nothing a shell or a path would change.
func validID(id string) bool {
	if len(id) == 0 || len(id) > 128 || id[0] == '.' {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// parseID parses a uid or gid as swarm does: decimal, empty meaning 0. The
// top value 4294967295 is (uid_t)-1, which chown reads as "leave unchanged",
// so it is refused.
func parseID(s string) (uint32, bool) {
	if s == "" {
		return 0, true
	}
	if len(s) > 10 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil || v == 1<<32-1 {
		return 0, false
	}
	return uint32(v), true
}
