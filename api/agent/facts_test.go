package agent

import (
	"reflect"
	"testing"

	"github.com/lockbox-project/lockbox/api/claimrule"
)

func TestClaimFacts(t *testing.T) {
	tests := []struct {
		name string
		in   *ContainerFacts
		want claimrule.Facts
	}{
		{"none reported", nil, claimrule.Facts{}},
		{"not a pod", &ContainerFacts{ContainerdNamespace: "prod"}, claimrule.Facts{ContainerdNamespace: "prod"}},
		{"a pod, labels unknown: labels sent anyway are not read", &ContainerFacts{Pod: &PodFacts{Namespace: "dev", Labels: map[string]string{"a": "b"}}, Image: "docker.io/library/x:1"},
			claimrule.Facts{Pod: &claimrule.Pod{Namespace: "dev"}, Image: "docker.io/library/x:1"}},
		{"a pod with labels", &ContainerFacts{Pod: &PodFacts{Namespace: "dev", Labels: map[string]string{"a": "b"}, LabelsKnown: true}, ContainerdNamespace: "k8s.io"},
			claimrule.Facts{Pod: &claimrule.Pod{Namespace: "dev", Labels: map[string]string{"a": "b"}, LabelsKnown: true}, ContainerdNamespace: "k8s.io"}},
		{"an empty pod is a pod", &ContainerFacts{Pod: &PodFacts{}}, claimrule.Facts{Pod: &claimrule.Pod{}}},
	}
	for _, tt := range tests {
		if got := tt.in.ClaimFacts(); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: %+v, want %+v", tt.name, got, tt.want)
		}
	}
}
