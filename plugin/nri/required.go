package nri

import (
	"encoding/json"

	nriplugin "github.com/containerd/nri/pkg/plugin"

	"github.com/lockbox-project/lockbox/api/claim"
)

// DefaultName is the name the plugin registers under unless told
// otherwise. NRI's default validator looks plugins up by this name (the
// index is not part of it), so a pod that requires the plugin names it.
const DefaultName = "lockbox"

// RequiredPluginsAnnotation is NRI's pod annotation (containerd >= 2.2,
// with the default validator enabled) that lists, as a JSON or YAML list,
// the plugins without which the pod's containers are not created. Its
// scope is in the key:
//
//	required-plugins.noderesource.dev                  every container of the pod
//	required-plugins.noderesource.dev/pod              the same
//	required-plugins.noderesource.dev/container.NAME   the container NAME only
//
// The validator reads it from the pod's annotations only (a container
// annotation of that key is ignored) and the container key wins over the
// pod keys.
//
// A claiming pod carries it so that it fails closed while the plugin is
// not connected (the plugin cannot refuse what it never sees), without
// every other pod of the node (CNI, kube-proxy) failing with it, which is
// what the validator's global required_plugins does.
const RequiredPluginsAnnotation = nriplugin.RequiredPluginsAnnotation

// RequiredAnnotationKey is the RequiredPluginsAnnotation key scoped to
// the container named container, or to the whole pod when container is
// empty.
func RequiredAnnotationKey(container string) string {
	if container == "" {
		return RequiredPluginsAnnotation
	}
	return RequiredPluginsAnnotation + "/container." + container
}

// RequiredAnnotationValue is the value that requires the plugins named
// (DefaultName when none is given): a JSON list, which the validator's
// YAML decoder reads as well.
func RequiredAnnotationValue(names ...string) string {
	if len(names) == 0 {
		names = []string{DefaultName}
	}
	b, err := json.Marshal(names)
	if err != nil {
		// A []string always marshals.
		panic(err)
	}
	return string(b)
}

// PodAnnotations returns the annotations of a pod whose containers all
// claim service and are refused while the plugin (under DefaultName) is
// not connected.
func PodAnnotations(service string) map[string]string {
	return map[string]string{
		claim.ServiceAnnotation:   service,
		RequiredAnnotationKey(""): RequiredAnnotationValue(),
	}
}
