package claimrule

import (
	"fmt"
	"strings"
)

// Set is a service's claim rules, parsed and checked together. The zero
// Set has no rules: containers outside Kubernetes may claim the service,
// Kubernetes pods may not. A Set is not modified after it is made.
type Set struct {
	rules []Rule
	// unreadable is why rules received from a manager could not be read;
	// such a Set refuses every claim (FromWire).
	unreadable error
}

// ParseSet parses and checks a service's rules: each must parse, there may
// be at most MaxRules, and together they must be able to hold. Rules that
// can never all hold are an error (k==a with k==b, k==a with k!=a), and so
// are k8s.* rules without a k8s.namespace==NAMESPACE rule: pods may claim
// only from a namespace the rules name, so such rules would admit no pod,
// while containers outside Kubernetes have no pod to test ("==" would
// refuse them all, "!=" would change nothing).
func ParseSet(ss []string) (Set, error) {
	if len(ss) > MaxRules {
		return Set{}, fmt.Errorf("%w: %d claim rules; at most %d", ErrInvalid, len(ss), MaxRules)
	}
	if len(ss) == 0 {
		return Set{}, nil
	}
	rules := make([]Rule, 0, len(ss))
	for _, s := range ss {
		r, err := Parse(s)
		if err != nil {
			return Set{}, err
		}
		rules = append(rules, r)
	}
	if err := consistent(rules); err != nil {
		return Set{}, err
	}
	return Set{rules: rules}, nil
}

// FromWire is the agent's reading of the rules a manager sent with a
// service. It never fails: rules this agent cannot read (a newer manager's
// key, say) make a Set that refuses every claim with the reason, rather
// than a service that vanishes or admits what its rules forbid.
func FromWire(ss []string) Set {
	s, err := ParseSet(ss)
	if err != nil {
		return Set{unreadable: err}
	}
	return s
}

// Unreadable is a Set that refuses every claim because of err: the agent
// could not read all of what a manager sent with the service (a field it
// does not know may be a rule it would not enforce; agent/grants).
func Unreadable(err error) Set {
	return Set{unreadable: err}
}

// Len is the number of rules.
func (s Set) Len() int { return len(s.rules) }

// Rules returns a copy of the rules, in their order.
func (s Set) Rules() []Rule { return append([]Rule(nil), s.rules...) }

// Strings returns the rules in canonical form.
func (s Set) Strings() []string {
	out := make([]string, len(s.rules))
	for i, r := range s.rules {
		out[i] = r.String()
	}
	return out
}

// String is the rules joined by commas, as "service ls" shows them.
func (s Set) String() string {
	if s.unreadable != nil {
		return "(unreadable)"
	}
	return strings.Join(s.Strings(), ",")
}

// Err is why rules received from a manager could not be read (FromWire),
// or nil.
func (s Set) Err() error { return s.unreadable }

// namespaceRule is the k8s.namespace==NAMESPACE rule of the set, if any.
func (s Set) namespaceRule() (Rule, bool) {
	for _, r := range s.rules {
		if r.Key == KeyK8sNamespace && r.Op == Eq {
			return r, true
		}
	}
	return Rule{}, false
}

// consistent refuses rules that can never all hold.
func consistent(rules []Rule) error {
	never := func(a, b Rule) error {
		return &Error{Rule: b.String(), Reason: fmt.Sprintf("it and %s can never both hold", a)}
	}
	hasNamespace := false
	for i, b := range rules {
		if b.Key == KeyK8sNamespace && b.Op == Eq {
			hasNamespace = true
		}
		for _, a := range rules[:i] {
			if a.Key != b.Key {
				continue
			}
			eq, ne := a, b
			switch {
			case a.Op == Eq && b.Op == Eq:
				if !compatible(a, b) {
					return never(a, b)
				}
				continue
			case a.Op == Ne && b.Op == Ne:
				continue
			case a.Op == Ne:
				eq, ne = b, a
			}
			if excludes(ne, eq) {
				return never(a, b)
			}
		}
	}
	if hasNamespace {
		return nil
	}
	for _, r := range rules {
		if strings.HasPrefix(r.Key, "k8s.") {
			return &Error{Rule: r.String(), Reason: "it needs a k8s.namespace==NAMESPACE rule beside it: a Kubernetes pod may claim a service only from the namespace its rules name, and a container outside Kubernetes has no pod to test"}
		}
	}
	return nil
}

// compatible reports whether some container satisfies two "==" rules on
// the same key.
func compatible(a, b Rule) bool {
	if a.Key != KeyImage {
		return a.Value == b.Value
	}
	ra, rb := repository(a.Value), repository(b.Value)
	switch {
	case ra == a.Value && rb == b.Value: // two repositories
		return ra == rb
	case ra == a.Value: // a repository and a full name
		return rb == ra
	case rb == b.Value:
		return ra == rb
	}
	return a.Value == b.Value
}

// excludes reports whether the "!=" rule ne fails for every container the
// "==" rule eq admits.
func excludes(ne, eq Rule) bool {
	if eq.Key != KeyImage {
		return ne.Value == eq.Value
	}
	// Every name eq admits must match ne's value: ne names the same full
	// name, or the repository of everything eq admits.
	if repository(ne.Value) == ne.Value {
		return repository(eq.Value) == ne.Value
	}
	return ne.Value == eq.Value && repository(eq.Value) != eq.Value
}
