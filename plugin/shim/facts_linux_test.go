//go:build linux

package shim

import (
	"context"
	"os"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"google.golang.org/protobuf/proto"

	"github.com/lockbox-project/lockbox/api/agent"
)

// The shim reports the containerd namespace of the create request, and the
// pod and image CRI's own annotations name: the facts the agent decides a
// claim's rules on.
func TestCreateReportsFacts(t *testing.T) {
	cri := map[string]string{"lockbox.service": "web", "io.kubernetes.cri.container-type": "container",
		"io.kubernetes.cri.sandbox-namespace": "payments", "io.kubernetes.cri.image-name": "busybox:1.36"}
	for _, tc := range []struct {
		name        string
		ns          string
		annotations map[string]string
		readonly    bool
		want        *agent.ContainerFacts
	}{
		{"ctr container in prod", "prod", map[string]string{"lockbox.service": "web"}, false,
			&agent.ContainerFacts{ContainerdNamespace: "prod"}},
		{"CRI pod", "k8s.io", cri, false,
			&agent.ContainerFacts{Pod: &agent.PodFacts{Namespace: "payments"}, ContainerdNamespace: "k8s.io", Image: "docker.io/library/busybox:1.36"}},
		{"CRI pod, read-only: targets carry the facts too", "k8s.io", cri, true,
			&agent.ContainerFacts{Pod: &agent.PodFacts{Namespace: "payments"}, ContainerdNamespace: "k8s.io", Image: "docker.io/library/busybox:1.36"}},
		{"no namespace in the request", "", map[string]string{"lockbox.service": "web"}, false,
			&agent.ContainerFacts{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, sock := startFakeAgent(t)
			var got []*agent.ContainerFacts
			// Under the agent's lock: the shim's client (agentconn) makes
			// raw syscalls, which give the race detector no edge between
			// this goroutine and the agent's.
			a.mu.Lock()
			a.onTargets = func(r *agent.TargetsRequest) { got = append(got, r.GetContainer().GetFacts()) }
			a.mu.Unlock()
			s := newService(&fakeTasks{pid: uint32(os.Getpid())}, sock)
			ctx := context.Background()
			if tc.ns != "" {
				ctx = namespaces.WithNamespace(ctx, tc.ns)
			}
			if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: writeBundle(t, tc.annotations, tc.readonly)}); err != nil {
				t.Fatal(err)
			}
			a.mu.Lock()
			got = append(got, a.prepares[0].GetContainer().GetFacts())
			a.mu.Unlock()
			if want := map[bool]int{false: 1, true: 2}[tc.readonly]; len(got) != want {
				t.Fatalf("%d requests with facts, want %d", len(got), want)
			}
			for _, f := range got {
				if !proto.Equal(f, tc.want) {
					t.Errorf("facts %v, want %v", f, tc.want)
				}
			}
		})
	}
}
