package claimrule

import (
	"errors"
	"fmt"
)

// Facts is what the agent knows about a container that claims a service,
// from what an adapter reports and the container cannot forge: never from
// an annotation or label the container's author sets.
type Facts struct {
	// Pod is the Kubernetes pod the container belongs to; nil when the
	// adapter knows the container is not part of one (no CRI sandbox).
	// An adapter that cannot tell must not leave it nil for a pod: the
	// secure default rests on it.
	Pod *Pod
	// ContainerdNamespace is the containerd namespace the container lives
	// in; "" when the adapter does not know it.
	ContainerdNamespace string
	// Image is the image name as containerd records it (normalised, such
	// as "docker.io/library/nginx:1.27"); "" when the adapter does not
	// know it.
	Image string
}

// Pod is a Kubernetes pod as an adapter reports it.
type Pod struct {
	// Namespace is the pod's namespace; "" fails every rule on it.
	Namespace string
	// Labels are the pod's labels, read only when LabelsKnown: adapters
	// that cannot see them leave LabelsKnown false, and every
	// k8s.pod.label rule then fails.
	Labels      map[string]string
	LabelsKnown bool
}

// ErrRefused is the kind of every refusal of Decide.
var ErrRefused = errors.New("claim refused")

// RefusedError is a claim the service's rules do not admit.
type RefusedError struct {
	// Rule is the first rule that does not hold, in canonical form; ""
	// when Default or Unreadable says why instead.
	Rule string
	// Default says the secure default refused it: a Kubernetes pod, and no
	// k8s.namespace==NAMESPACE rule on the service.
	Default bool
	// Unreadable says this agent could not read the service's rules.
	Unreadable bool
	// Reason says what the container's facts were, for the operator.
	Reason string
}

func (e *RefusedError) Error() string {
	switch {
	case e.Default:
		return "claim refused by the default rule: " + e.Reason
	case e.Unreadable:
		return "claim refused: " + e.Reason
	}
	return fmt.Sprintf("claim rule %s does not hold: %s", e.Rule, e.Reason)
}

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// Decide returns nil when a container with facts f may claim a service
// with these rules, or a *RefusedError naming the secure default or the
// first rule, in the service's order, that does not hold.
func (s Set) Decide(f Facts) error {
	if s.unreadable != nil {
		return &RefusedError{Unreadable: true, Reason: fmt.Sprintf("this agent cannot read the service's claim rules (upgrade it to the managers' version): %v", s.unreadable)}
	}
	if f.Pod != nil {
		if _, ok := s.namespaceRule(); !ok {
			return &RefusedError{Default: true, Reason: fmt.Sprintf("a Kubernetes pod (namespace %q) may claim only a service whose claim rules name its namespace (k8s.namespace==NAMESPACE), and this service names none", f.Pod.Namespace)}
		}
	}
	for _, r := range s.rules {
		if ok, why := r.holds(f); !ok {
			return &RefusedError{Rule: r.String(), Reason: why}
		}
	}
	return nil
}

// holds reports whether f satisfies r and, when it does not, why.
func (r Rule) holds(f Facts) (bool, string) {
	// have is the fact the rule tests; known is false when the adapter did
	// not report it (every rule on it fails), present is false when the
	// container knowably has no such value (only "!=" holds).
	var have, what string
	known, present := true, true
	switch {
	case r.Key == KeyK8sNamespace:
		what = "the pod's namespace"
		switch {
		case f.Pod == nil:
			present = false
			what = "the container is not in a Kubernetes pod"
		case f.Pod.Namespace == "":
			known = false
		default:
			have = f.Pod.Namespace
		}
	case r.Label != "" && r.Key == KeyK8sPodLabelPrefix+r.Label:
		what = fmt.Sprintf("the pod's label %q", r.Label)
		switch {
		case f.Pod == nil:
			present = false
			what = "the container is not in a Kubernetes pod"
		case !f.Pod.LabelsKnown:
			known = false
			what = "the pod's labels"
		default:
			have, present = f.Pod.Labels[r.Label]
			if !present {
				what = fmt.Sprintf("the pod has no label %q", r.Label)
			}
		}
	case r.Key == KeyContainerdNamespace:
		what = "the containerd namespace"
		have, known = f.ContainerdNamespace, f.ContainerdNamespace != ""
	case r.Key == KeyImage:
		what = "the image"
		have, known = f.Image, f.Image != ""
	default:
		// Parse makes no other key; a Rule built by hand fails closed.
		return false, fmt.Sprintf("unknown key %q", r.Key)
	}
	if !known {
		return false, "the adapter that started the container did not report " + what
	}
	equal := present && have == r.Value
	if present && r.Key == KeyImage {
		equal = imageMatches(r.Value, have)
	}
	if equal == (r.Op == Eq) {
		return true, ""
	}
	if !present {
		return false, what
	}
	return false, fmt.Sprintf("%s is %q", what, have)
}
