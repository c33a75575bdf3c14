package claimrule

import (
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"k8s.namespace==a", "k8s.pod.label.app.kubernetes.io/name!=x", "containerd.namespace==k8s.io",
		"container.image==docker.io/library/nginx:1@sha256:ab", "x", "==", "k8s.pod.label.==", "a==b!=c", " K8S.NAMESPACE != b ",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if err != nil {
			if !strings.Contains(err.Error(), "invalid claim rule") {
				t.Fatalf("Parse(%q) error %q does not say what it is", s, err)
			}
			return
		}
		// The canonical form parses back to the same rule.
		again, err := Parse(r.String())
		if err != nil || again != r {
			t.Fatalf("Parse(%q) = %+v; its String %q parses to %+v, %v", s, r, r.String(), again, err)
		}
		// A rule alone is checked as a set too, and deciding never panics.
		if set, err := ParseSet([]string{s}); err == nil {
			_ = set.Decide(Facts{})
			_ = set.Decide(Facts{Pod: &Pod{Namespace: r.Value, Labels: map[string]string{r.Label: r.Value}, LabelsKnown: true}, ContainerdNamespace: r.Value, Image: r.Value})
		}
	})
}

// FuzzParseSet checks that a set ParseSet accepts can be satisfied by the
// facts its own "==" rules describe, unless its "!=" rules exclude exactly
// those: no accepted set is one that can never hold for lack of a check.
func FuzzParseSet(f *testing.F) {
	f.Add("k8s.namespace==a;k8s.pod.label.x==y;k8s.pod.label.z!=w")
	f.Add("container.image==docker.io/library/nginx;container.image!=docker.io/library/nginx:1")
	f.Add("containerd.namespace==prod;containerd.namespace!=dev")
	f.Fuzz(func(t *testing.T, joined string) {
		set, err := ParseSet(strings.Split(joined, ";"))
		if err != nil {
			return
		}
		// Build the facts the "==" rules ask for.
		var fa Facts
		pod := &Pod{Labels: map[string]string{}, LabelsKnown: true}
		isPod := false
		for _, r := range set.rules {
			if r.Op != Eq {
				continue
			}
			switch {
			case r.Key == KeyK8sNamespace:
				pod.Namespace, isPod = r.Value, true
			case r.Label != "":
				pod.Labels[r.Label] = r.Value
			case r.Key == KeyContainerdNamespace:
				fa.ContainerdNamespace = r.Value
			case r.Key == KeyImage:
				// The most specific image any "==" rule names.
				if fa.Image == "" || repository(fa.Image) == fa.Image {
					fa.Image = r.Value
				}
			}
		}
		if isPod {
			fa.Pod = pod
		}
		// Facts the rules do not constrain get values no rule names.
		if fa.ContainerdNamespace == "" {
			fa.ContainerdNamespace = "unnamed-ns"
		}
		if fa.Image == "" {
			fa.Image = "unnamed.example/unnamed:tag"
		} else if repository(fa.Image) == fa.Image {
			fa.Image += ":unnamed-tag"
		}
		if err := set.Decide(fa); err != nil {
			t.Fatalf("ParseSet(%q) accepted rules that refuse the facts they describe (%+v): %v", joined, fa, err)
		}
	})
}
