package hotpath

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lockbox-project/lockbox/plugin/runtime/agentconn"
)

// The facts a spec tells: a pod only when containerd's CRI made the spec
// (its container-type annotation), the pod's namespace and image from
// CRI's own annotations; nothing else from annotations.
func TestSpecFacts(t *testing.T) {
	tests := []struct {
		name string
		ann  map[string]string
		want agentconn.Facts
	}{
		{"ctr container: no pod, image unknown", map[string]string{ServiceAnnotation: "web"}, agentconn.Facts{}},
		{"ctr container annotated with CRI's namespace but no container type: a pod of unknown namespace, restricted, not admitted",
			map[string]string{CRISandboxNamespace: "payments", CRIImageName: "busybox"}, agentconn.Facts{Pod: &agentconn.Pod{}}},
		{"other annotations: no pod", map[string]string{"org.opencontainers.image.title": "x", "io.kubernetesX": "y"}, agentconn.Facts{}},
		{"CRI-O container: a pod of unknown namespace", map[string]string{"io.kubernetes.cri-o.ContainerType": "container", "io.kubernetes.pod.namespace": "payments"},
			agentconn.Facts{Pod: &agentconn.Pod{}}},
		{"CRI container", map[string]string{CRIContainerType: "container", CRISandboxNamespace: "payments", CRIImageName: "docker.io/library/busybox:1.36"},
			agentconn.Facts{Pod: &agentconn.Pod{Namespace: "payments"}, Image: "docker.io/library/busybox:1.36"}},
		{"CRI container, short image name", map[string]string{CRIContainerType: "container", CRISandboxNamespace: "dev", CRIImageName: "busybox"},
			agentconn.Facts{Pod: &agentconn.Pod{Namespace: "dev"}, Image: "docker.io/library/busybox:latest"}},
		{"CRI container without a namespace: a pod of unknown namespace", map[string]string{CRIContainerType: "container"},
			agentconn.Facts{Pod: &agentconn.Pod{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SpecFacts(tt.ann); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("SpecFacts = %+v (pod %+v), want %+v (pod %+v)", got, got.Pod, tt.want, tt.want.Pod)
			}
		})
	}
}

// ReadClaim carries the spec's facts into the agent's view of the
// container.
func TestClaimCarriesSpecFacts(t *testing.T) {
	raw, _ := json.Marshal(specs.Spec{Root: &specs.Root{Path: "rootfs"}, Annotations: map[string]string{
		ServiceAnnotation: "pay", CRIContainerType: "container", CRISandboxNamespace: "payments", CRIImageName: "example.com/app:1"}})
	c, err := parseClaim(raw, "config.json")
	if err != nil || c == nil {
		t.Fatalf("claim %v, %v", c, err)
	}
	c.Facts.ContainerdNamespace = "k8s.io"
	got := c.Container("c1", 7, "/").Facts
	want := &agentconn.Facts{Pod: &agentconn.Pod{Namespace: "payments"}, ContainerdNamespace: "k8s.io", Image: "example.com/app:1"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("facts %+v, want %+v", got, want)
	}
	// The container's facts are a copy: changing them changes no other.
	got.Pod.Namespace = "x"
	if c.Facts.Pod.Namespace != "payments" {
		t.Fatal("Container shares the claim's facts")
	}
}

func TestNamespaceFromRuncRoot(t *testing.T) {
	for root, want := range map[string]string{
		"/run/containerd/runc/k8s.io":       "k8s.io",
		"/run/containerd/runc/default/":     "default",
		"/tmp/x/runc/prod":                  "prod",
		"/var/run/docker/runtime-runc/moby": "moby",
		"":                                  "",
		"/":                                 "",
		"/run/containerd/runc/bad..ns":      "",
		"relative/dev":                      "dev",
	} {
		if got := NamespaceFromRuncRoot(root); got != want {
			t.Errorf("NamespaceFromRuncRoot(%q) = %q, want %q", root, got, want)
		}
	}
}

func TestNamespaceFromBundle(t *testing.T) {
	tests := []struct {
		bundle, id, want string
	}{
		{"/run/containerd/io.containerd.runtime.v2.task/prod/c1", "c1", "prod"},
		{"/tmp/t/state/io.containerd.runtime.v2.task/k8s.io/abc/", "abc", "k8s.io"},
		// Another container's bundle, another layout, a relative path: unknown.
		{"/run/containerd/io.containerd.runtime.v2.task/prod/c2", "c1", ""},
		{"/var/lib/bundles/prod/c1", "c1", ""},
		{"io.containerd.runtime.v2.task/prod/c1", "c1", ""},
		{"", "c1", ""},
		{"/run/containerd/io.containerd.runtime.v2.task/-bad/c1", "c1", ""},
	}
	for _, tt := range tests {
		if got := NamespaceFromBundle(tt.bundle, tt.id); got != tt.want {
			t.Errorf("NamespaceFromBundle(%q, %q) = %q, want %q", tt.bundle, tt.id, got, tt.want)
		}
	}
}

func TestNormalizeImage(t *testing.T) {
	for ref, want := range map[string]string{
		"busybox":                           "docker.io/library/busybox:latest",
		"busybox:1.36":                      "docker.io/library/busybox:1.36",
		"library/busybox":                   "docker.io/library/busybox:latest",
		"docker.io/library/busybox:1.36":    "docker.io/library/busybox:1.36",
		"index.docker.io/me/app":            "docker.io/me/app:latest",
		"me/app:2":                          "docker.io/me/app:2",
		"example.com/app":                   "example.com/app:latest",
		"example.com:5000/team/app:1":       "example.com:5000/team/app:1",
		"localhost/app":                     "localhost/app:latest",
		"registry.k8s.io/pause:3.10.2":      "registry.k8s.io/pause:3.10.2",
		"busybox@sha256:" + hex64:           "docker.io/library/busybox@sha256:" + hex64,
		"example.com/app:1@sha256:" + hex64: "example.com/app:1@sha256:" + hex64,
		"sha256:" + hex64:                   "",
		hex64:                               "",
		"":                                  "",
	} {
		if got := NormalizeImage(ref); got != want {
			t.Errorf("NormalizeImage(%q) = %q, want %q", ref, got, want)
		}
	}
}

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// The hook reports the containerd namespace its bundle path names, when
// containerd laid the bundle out, and the pod CRI's annotations name.
func TestHookReportsFacts(t *testing.T) {
	ann := map[string]string{ServiceAnnotation: "pay", CRIContainerType: "container", CRISandboxNamespace: "payments"}
	r := newHookRig(t, ann)
	r.bundle = filepath.Join(t.TempDir(), BundleDirName, "k8s.io", "c1")
	if err := os.MkdirAll(r.bundle, 0o700); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(specs.Spec{Version: specs.Version, Root: &specs.Root{Path: "rootfs"}, Annotations: ann})
	if err := os.WriteFile(filepath.Join(r.bundle, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	r.h.Attach = func(string, []Handover) error { return nil }
	if err := r.h.Run(CreateContainer, r.state(t, ann)); err != nil {
		t.Fatal(err)
	}
	want := &agentconn.Facts{Pod: &agentconn.Pod{Namespace: "payments"}, ContainerdNamespace: "k8s.io"}
	if len(r.agent.prepared) != 1 || !reflect.DeepEqual(r.agent.prepared[0].ctr.Facts, want) {
		t.Fatalf("prepared %+v, want facts %+v", r.agent.prepared, want)
	}
}
