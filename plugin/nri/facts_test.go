package nri

import (
	"context"
	"os"
	"testing"

	"github.com/containerd/nri/pkg/api"
	"google.golang.org/protobuf/proto"

	"github.com/lockbox-project/lockbox/api/agent"
)

// The NRI plugin reports the pod's namespace and labels from NRI's pod
// (never from annotations, which the pod writes: a forged CRI namespace
// annotation changes nothing), the CRI's containerd namespace and the
// image containerd resolved, at CreateContainer (targets) and
// StartContainer (prepare) alike.
func TestFactsFromNRI(t *testing.T) {
	pod := &api.PodSandbox{Namespace: "dev", Labels: map[string]string{"team": "pay"},
		Annotations: map[string]string{ServiceAnnotation: "web", "io.kubernetes.cri.sandbox-namespace": "payments"}}
	ctr := &api.Container{Id: "c1", Name: "app", Pid: uint32(os.Getpid()),
		Annotations: map[string]string{"io.kubernetes.cri.sandbox-namespace": "payments", "io.kubernetes.cri.image-name": "docker.io/library/evil:1"},
		Image:       &api.Image{Name: "docker.io/library/busybox:1.36"}}
	want := &agent.ContainerFacts{Pod: &agent.PodFacts{Namespace: "dev", Labels: map[string]string{"team": "pay"}, LabelsKnown: true},
		ContainerdNamespace: "k8s.io", Image: "docker.io/library/busybox:1.36"}
	a := &fakeAgent{}
	p := New(a)
	ctx := context.Background()
	if _, _, err := p.CreateContainer(ctx, pod, ctr); err != nil {
		t.Fatal(err)
	}
	if err := p.StartContainer(ctx, pod, ctr); err != nil {
		t.Fatal(err)
	}
	if len(a.targeted) != 1 || len(a.prepared) != 1 {
		t.Fatalf("%d targets, %d prepares", len(a.targeted), len(a.prepared))
	}
	for _, got := range []*agent.ContainerFacts{a.targeted[0].GetContainer().GetFacts(), a.prepared[0].GetContainer().GetFacts()} {
		if !proto.Equal(got, want) {
			t.Errorf("facts %v, want %v", got, want)
		}
	}
}
