package constraint

import (
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/lockbox-project/lockbox/api/ruleexpr"
	"github.com/lockbox-project/lockbox/api/types"
)

// Op is a comparison; the syntax is api/ruleexpr's, shared with claim
// rules.
type Op = ruleexpr.Op

const (
	Eq = ruleexpr.Eq // ==
	Ne = ruleexpr.Ne // !=
)

// Keys a constraint may test, besides the node.labels. prefix.
const (
	KeyID       = "node.id"
	KeyHostname = "node.hostname"
	KeyRole     = "node.role"
	KeyOS       = "node.platform.os"
	KeyArch     = "node.platform.arch"
	labelPrefix = "node.labels."
)

// Constraint is one parsed constraint.
type Constraint struct {
	Key   string // lower-cased, such as "node.hostname" or "node.labels.zone"
	Label string // the label name when Key starts with node.labels.
	Op    Op
	Value string
}

// String is the canonical form, which Parse accepts.
func (c Constraint) String() string { return c.Key + c.Op.String() + c.Value }

// ErrSyntax is the kind of every parse error.
var ErrSyntax = errors.New("invalid constraint")

// Error is a parse error with a message a user can act on.
type Error struct {
	Constraint string
	Reason     string
}

func (e *Error) Error() string {
	return fmt.Sprintf("invalid constraint %q: %s", e.Constraint, e.Reason)
}

func (e *Error) Unwrap() error { return ErrSyntax }

// Parse parses one constraint such as "node.labels.zone==east".
func Parse(s string) (Constraint, error) {
	fail := func(format string, args ...any) (Constraint, error) {
		return Constraint{}, &Error{Constraint: s, Reason: fmt.Sprintf(format, args...)}
	}
	key, op, value, err := ruleexpr.Split(s)
	if err != nil {
		return fail("%v", err)
	}
	c := Constraint{Op: op, Value: value}
	lower := strings.ToLower(key)
	switch {
	case lower == KeyID, lower == KeyHostname, lower == KeyOS, lower == KeyArch:
		c.Key = lower
	case lower == KeyRole:
		c.Key = lower
		v := strings.ToLower(c.Value)
		if v != "worker" && v != "manager" {
			return fail("node.role is worker or manager")
		}
		c.Value = v
	case strings.HasPrefix(lower, labelPrefix):
		label := key[len(labelPrefix):]
		if label == "" {
			return fail("empty label name after node.labels.")
		}
		for _, r := range label {
			if unicode.IsSpace(r) || unicode.IsControl(r) || r == '=' || r == '!' {
				return fail("label name %q holds a character not allowed in labels", label)
			}
		}
		c.Key, c.Label = labelPrefix+label, label
	default:
		return fail("unknown key %q; use node.id, node.hostname, node.role, node.platform.os, node.platform.arch or node.labels.<name>", key)
	}
	return c, nil
}

// ParseAll parses every constraint, failing on the first bad one.
func ParseAll(ss []string) ([]Constraint, error) {
	out := make([]Constraint, 0, len(ss))
	for _, s := range ss {
		c, err := Parse(s)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// Match reports whether node satisfies c.
func (c Constraint) Match(node *types.Node) bool {
	var have string
	var ok bool
	switch c.Key {
	case KeyID:
		have, ok = node.GetId(), true
	case KeyHostname:
		have, ok = node.GetDescription().GetHostname(), true
	case KeyRole:
		have, ok = "worker", true
		if node.GetRole() == types.NodeRole_NODE_ROLE_MANAGER {
			have = "manager"
		}
	case KeyOS:
		have, ok = node.GetDescription().GetPlatform().GetOs(), true
	case KeyArch:
		have, ok = node.GetDescription().GetPlatform().GetArchitecture(), true
	default:
		have, ok = node.GetSpec().GetLabels()[c.Label]
	}
	equal := ok && strings.EqualFold(have, c.Value)
	if c.Op == Eq {
		return equal
	}
	return !equal
}

// Match reports whether node satisfies every constraint; no constraint
// places a service on every node.
func Match(cs []Constraint, node *types.Node) bool {
	for _, c := range cs {
		if !c.Match(node) {
			return false
		}
	}
	return true
}
