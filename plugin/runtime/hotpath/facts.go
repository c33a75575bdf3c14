package hotpath

import (
	"path/filepath"
	"strings"

	"github.com/lockbox-project/lockbox/plugin/runtime/agentconn"
)

// This file is the one home of reading a claim's facts (api/claimrule's
// Facts: what the service's claim rules are decided on) from what a
// runtime adapter sees: the OCI spec's annotations, runc's --root, the
// bundle path. The wrapper, the hook and the runtime shim all read them
// here; the NRI plugin has its own source, NRI's pod.

// The annotations containerd's CRI sets on the spec of every container it
// creates (containerd's internal/cri/annotations).
const (
	// CRISandboxNamespace is the pod's Kubernetes namespace.
	CRISandboxNamespace = "io.kubernetes.cri.sandbox-namespace"
	// CRIImageName is the image the container was created from, as the
	// pod names it (CRI's user-specified image) or as containerd does.
	CRIImageName = "io.kubernetes.cri.image-name"
)

// SpecFacts reads the facts a container's OCI spec annotations tell and
// the container cannot forge.
//
// A container that containerd's CRI created is a pod's: CRI sets
// CRIContainerType, CRISandboxNamespace and CRIImageName on every spec it
// makes, after the pod's and container's own annotations that the runtime
// handler passes through (containerd v2.4.2,
// internal/cri/server/container_create.go: the pass-through at lines
// 865-873, annotations.DefaultCRIAnnotations at lines 928-931, both
// customopts.WithAnnotation, which overwrites). A pod that annotates
// itself with one of these keys is overwritten, even under a handler that
// passes "*" through (integration/claimrules_test.go proves it).
//
// A spec without CRIContainerType was not made by containerd's CRI. One
// with another io.kubernetes.* annotation was made for a pod by another
// CRI runtime (CRI-O, whose containers the hook may serve through
// hooks.d): a pod whose namespace this code does not read, which the
// secure default then refuses and every k8s.* rule fails (fail closed,
// rather than a pod passing for a container outside Kubernetes). A spec
// with neither is no pod's. Outside CRI nothing sets these keys but
// whoever creates the container through the runtime's API, who is root on
// the node: one who adds them only restricts their own container to what
// a pod may claim. The image is then unknown: nothing but containerd's CRI
// records it in the spec, and a container.image rule fails.
func SpecFacts(annotations map[string]string) agentconn.Facts {
	if _, ok := annotations[CRIContainerType]; !ok {
		for k := range annotations {
			if strings.HasPrefix(k, kubernetesPrefix) {
				return agentconn.Facts{Pod: &agentconn.Pod{}}
			}
		}
		return agentconn.Facts{}
	}
	return agentconn.Facts{
		Pod:   &agentconn.Pod{Namespace: annotations[CRISandboxNamespace]},
		Image: NormalizeImage(annotations[CRIImageName]),
	}
}

// kubernetesPrefix starts the annotations CRI runtimes and the kubelet
// put on a pod's containers.
const kubernetesPrefix = "io.kubernetes."

// NamespaceFromRuncRoot is the containerd namespace of a container that
// containerd's runc shim has runc create with global --root root: the
// shim always runs runc with root = <options.Root or /run/containerd/runc>/<namespace>
// (containerd v2.4.2, cmd/containerd-shim-runc-v2/process/init.go,
// NewRunc: Root: filepath.Join(root, namespace), lines 82-92, called from
// runc/container.go line 205 with the namespace of the create request).
// The runtime's options may move the root but not the last element. ""
// when root is empty or its last element is no containerd namespace.
func NamespaceFromRuncRoot(root string) string {
	if root == "" {
		return ""
	}
	ns := filepath.Base(filepath.Clean(root))
	if !ValidNamespace(ns) {
		return ""
	}
	return ns
}

// BundleDirName is the directory under containerd's state directory in
// which the runtime v2 lays out bundles: <state>/<BundleDirName>/<namespace>/<id>.
const BundleDirName = "io.containerd.runtime.v2.task"

// NamespaceFromBundle is the containerd namespace of container id whose
// bundle is bundle, when the bundle is laid out as containerd's runtime v2
// does (containerd v2.4.2, core/runtime/v2/bundle.go line 62:
// filepath.Join(state, ns, id), state being <state>/io.containerd.runtime.v2.task,
// ns the namespace of the create request); "" for any
// other layout (a bundle made by hand, another engine), which the hook
// then cannot tell.
func NamespaceFromBundle(bundle, id string) string {
	if bundle == "" || !filepath.IsAbs(bundle) {
		return ""
	}
	b := filepath.Clean(bundle)
	if filepath.Base(b) != id {
		return ""
	}
	nsDir := filepath.Dir(b)
	if filepath.Base(filepath.Dir(nsDir)) != BundleDirName {
		return ""
	}
	ns := filepath.Base(nsDir)
	if !ValidNamespace(ns) {
		return ""
	}
	return ns
}

// ValidNamespace is containerd's rule for a namespace
// (pkg/identifiers.Validate): letters and digits, separated by single
// '.', '_' or '-', at most 76 characters.
func ValidNamespace(s string) bool {
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }
	if len(s) == 0 || len(s) > 76 || !alnum(s[0]) || !alnum(s[len(s)-1]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !alnum(c) && (c != '.' && c != '_' && c != '-' || !alnum(s[i-1])) {
			return false
		}
	}
	return true
}

// NormalizeImage writes an image reference as containerd records image
// names, which claim rules compare with: "busybox" is
// "docker.io/library/busybox:latest", "example.com/app" is
// "example.com/app:latest". CRI's image-name annotation holds the image as
// the pod names it, which may be short. An image ID (no name) and an empty
// reference are "" (unknown).
func NormalizeImage(ref string) string {
	if ref == "" || strings.HasPrefix(ref, "sha256:") || isHex64(ref) {
		return ""
	}
	name, digest, _ := strings.Cut(ref, "@")
	if digest != "" {
		digest = "@" + digest
	}
	domain, rest := "docker.io", name
	if i := strings.IndexByte(name, '/'); i >= 0 {
		if first := name[:i]; strings.ContainsAny(first, ".:") || first == "localhost" || strings.ToLower(first) != first {
			domain, rest = first, name[i+1:]
		}
	}
	if domain == "index.docker.io" {
		domain = "docker.io"
	}
	if domain == "docker.io" && !strings.Contains(rest, "/") {
		rest = "library/" + rest
	}
	if digest == "" && !strings.Contains(rest, ":") {
		rest += ":latest"
	}
	return domain + "/" + rest + digest
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
