package nri

import (
	"context"
	"errors"
	"testing"

	"github.com/containerd/nri/pkg/api"
	validator "github.com/containerd/nri/plugins/default-validator"
)

// The annotations Lockbox documents are checked by NRI's own default
// validator (the code containerd runs): a claiming pod is refused without
// the plugin and admitted with it, in the pod and the container scope, and
// a pod that does not ask for the plugin is admitted either way unless the
// plugin is required globally.
func TestRequiredAnnotationsWithNRIValidator(t *testing.T) {
	perPod := &validator.DefaultValidatorConfig{Enable: true}
	global := &validator.DefaultValidatorConfig{Enable: true, RequiredPlugins: []string{DefaultName}, TolerateMissingAnnotation: "tolerate"}
	ctr := &api.Container{Name: "app"}
	tests := []struct {
		name    string
		cfg     *validator.DefaultValidatorConfig
		pod     map[string]string
		plugins []string
		refused bool
	}{
		{"claiming pod, plugin down", perPod, PodAnnotations("web"), nil, true},
		{"claiming pod, other plugin up", perPod, PodAnnotations("web"), []string{"other"}, true},
		{"claiming pod, plugin up", perPod, PodAnnotations("web"), []string{DefaultName}, false},
		{"container scope, this container", perPod, map[string]string{RequiredAnnotationKey("app"): RequiredAnnotationValue()}, nil, true},
		{"container scope, another container", perPod, map[string]string{RequiredAnnotationKey("sidecar"): RequiredAnnotationValue()}, nil, false},
		{"pod scope with /pod", perPod, map[string]string{RequiredPluginsAnnotation + "/pod": RequiredAnnotationValue()}, nil, true},
		{"YAML flow list", perPod, map[string]string{RequiredPluginsAnnotation: "[lockbox]"}, nil, true},
		{"plain pod, plugin down", perPod, nil, nil, false},
		{"global: plain pod, plugin down", global, nil, nil, true},
		{"global: plain pod tolerating", global, map[string]string{"tolerate": "true"}, nil, false},
		{"global: plain pod, plugin up", global, nil, []string{DefaultName}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &api.ValidateContainerAdjustmentRequest{Pod: &api.PodSandbox{Name: "p", Annotations: tt.pod}, Container: ctr}
			for i, n := range tt.plugins {
				req.AddPlugin(n, string(rune('0'+i)))
			}
			err := validator.NewDefaultValidator(tt.cfg).ValidateContainerAdjustment(context.Background(), req)
			if refused := errors.Is(err, validator.ErrValidation); refused != tt.refused {
				t.Fatalf("refused = %v (%v), want %v", refused, err, tt.refused)
			}
		})
	}
}

func TestRequiredAnnotationKeyAndValue(t *testing.T) {
	if got := RequiredAnnotationKey(""); got != "required-plugins.noderesource.dev" {
		t.Errorf("pod key = %q", got)
	}
	if got := RequiredAnnotationKey("app"); got != "required-plugins.noderesource.dev/container.app" {
		t.Errorf("container key = %q", got)
	}
	if got := RequiredAnnotationValue(); got != `["lockbox"]` {
		t.Errorf("value = %q", got)
	}
	if got := RequiredAnnotationValue("a", "b"); got != `["a","b"]` {
		t.Errorf("value = %q", got)
	}
	if got := PodAnnotations("web"); got[ServiceAnnotation] != "web" || got[RequiredPluginsAnnotation] != `["lockbox"]` || len(got) != 2 {
		t.Errorf("pod annotations = %v", got)
	}
}
