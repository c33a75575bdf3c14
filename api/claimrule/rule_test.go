package claimrule

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    string // canonical form; "" means an error
		wantErr string
	}{
		{"k8s.namespace==payments", "k8s.namespace==payments", ""},
		{" K8S.Namespace != kube-system ", "k8s.namespace!=kube-system", ""},
		{"k8s.pod.label.app==web", "k8s.pod.label.app==web", ""},
		{"k8s.pod.label.App==Web_1.x", "k8s.pod.label.App==Web_1.x", ""},
		{"K8s.Pod.Label.app.kubernetes.io/name==db", "k8s.pod.label.app.kubernetes.io/name==db", ""},
		{"containerd.namespace==prod", "containerd.namespace==prod", ""},
		{"containerd.namespace==k8s.io", "containerd.namespace==k8s.io", ""},
		{"container.image==docker.io/library/nginx:1.27", "container.image==docker.io/library/nginx:1.27", ""},
		{"container.image==localhost:5000/app@sha256:abc", "container.image==localhost:5000/app@sha256:abc", ""},
		{"container.image!=docker.io/library/busybox", "container.image!=docker.io/library/busybox", ""},

		{"k8s.namespace=payments", "", "want KEY==VALUE"},
		{"k8s.namespace", "", "want KEY==VALUE"},
		{"", "", "want KEY==VALUE"},
		{"==x", "", "empty key"},
		{"k8s.namespace==", "", "empty value"},
		{"k8s.namespace==a==b", "", "more than one operator"},
		{"k8s.namespace==a\x00", "", "control character"},
		{"image==nginx", "", "unknown key \"image\""},
		{"node.id==x", "", "unknown key"},
		{"k8s.pod.annotation.x==y", "", "unknown key"},
		{"k8s.namespace==Payments", "", "could never hold"},
		{"k8s.namespace==-pay", "", "not a Kubernetes namespace"},
		{"k8s.namespace==" + strings.Repeat("a", 64), "", "not a Kubernetes namespace"},
		{"k8s.namespace==pay.ments", "", "not a Kubernetes namespace"},
		{"k8s.pod.label.==x", "", "empty label key"},
		{"k8s.pod.label.a b==x", "", "not a Kubernetes label key"},
		{"k8s.pod.label.Example.com/x==y", "", "prefix"},
		{"k8s.pod.label./x==y", "", "prefix"},
		{"k8s.pod.label.a/==y", "", "name must be"},
		{"k8s.pod.label.app==-x", "", "not a Kubernetes label value"},
		{"k8s.pod.label.app==" + strings.Repeat("v", 64), "", "not a Kubernetes label value"},
		{"containerd.namespace==a..b", "", "not a containerd namespace"},
		{"containerd.namespace==a b", "", "not a containerd namespace"},
		{"containerd.namespace==" + strings.Repeat("n", 77), "", "not a containerd namespace"},
		{"container.image==nginx latest", "", "not an image name"},
		{"container.image==nginx:", "", "not an image name"},
		{"container.image==/nginx", "", "not an image name"},
		{"container.image==@sha256:x", "", "names no repository"},
		{"container.image==" + strings.Repeat("i", 1025), "", "the limit is 1024"},
	}
	for _, tt := range tests {
		r, err := Parse(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("Parse(%q) = %v, want an error", tt.in, r)
				continue
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Parse(%q) error %q, want it to say %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || r.String() != tt.want {
			t.Errorf("Parse(%q) = %q, %v; want %q", tt.in, r, err, tt.want)
		}
	}
}

func TestParseSet(t *testing.T) {
	tests := []struct {
		name    string
		rules   []string
		wantErr string // "" means accepted
	}{
		{"none", nil, ""},
		{"namespace", []string{"k8s.namespace==payments"}, ""},
		{"namespace and labels", []string{"k8s.pod.label.app==db", "k8s.namespace==payments", "k8s.pod.label.tier!=web"}, ""},
		{"namespace and redundant !=", []string{"k8s.namespace==payments", "k8s.namespace!=dev"}, ""},
		{"containerd only", []string{"containerd.namespace==prod", "container.image!=docker.io/library/busybox"}, ""},
		{"duplicate", []string{"containerd.namespace==prod", "containerd.namespace == prod"}, ""},
		{"image repository and tag", []string{"container.image==docker.io/library/nginx", "container.image==docker.io/library/nginx:1.27"}, ""},
		{"image != another tag", []string{"container.image==docker.io/library/nginx", "container.image!=docker.io/library/nginx:1.0"}, ""},

		{"two namespaces", []string{"k8s.namespace==a", "k8s.namespace==b"}, "can never both hold"},
		{"== and !=", []string{"containerd.namespace==prod", "containerd.namespace!=prod"}, "can never both hold"},
		{"!= then ==", []string{"containerd.namespace!=prod", "containerd.namespace==prod"}, "can never both hold"},
		{"two labels values", []string{"k8s.namespace==a", "k8s.pod.label.app==x", "k8s.pod.label.app==y"}, "can never both hold"},
		{"two images", []string{"container.image==docker.io/library/nginx:1", "container.image==docker.io/library/nginx:2"}, "can never both hold"},
		{"image two repositories", []string{"container.image==docker.io/library/nginx", "container.image==docker.io/library/redis:7"}, "can never both hold"},
		{"image excluded repository", []string{"container.image==docker.io/library/nginx:1", "container.image!=docker.io/library/nginx"}, "can never both hold"},
		{"image excluded name", []string{"container.image!=docker.io/library/nginx:1", "container.image==docker.io/library/nginx:1"}, "can never both hold"},
		{"label without namespace", []string{"k8s.pod.label.app==db"}, "needs a k8s.namespace==NAMESPACE rule"},
		{"namespace != alone", []string{"k8s.namespace!=kube-system"}, "needs a k8s.namespace==NAMESPACE rule"},
		{"bad rule", []string{"k8s.namespace==a", "nope"}, "want KEY==VALUE"},
		{"too many", make([]string, MaxRules+1), "at most 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSet(tt.rules)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseSet(%q): %v", tt.rules, err)
				}
				if s.Len() != len(tt.rules) || s.Err() != nil {
					t.Fatalf("ParseSet(%q) holds %d rules, err %v", tt.rules, s.Len(), s.Err())
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseSet(%q) error %v, want it to say %q", tt.rules, err, tt.wantErr)
			}
		})
	}
}

func TestSetStrings(t *testing.T) {
	s, err := ParseSet([]string{" K8S.namespace == pay ", "k8s.pod.label.App!=x"})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.String(); got != "k8s.namespace==pay,k8s.pod.label.App!=x" {
		t.Fatalf("String() = %q", got)
	}
	rules := s.Rules()
	rules[0].Value = "changed"
	if s.Rules()[0].Value != "pay" {
		t.Fatal("Rules() handed out the set's own slice")
	}
	if (Set{}).String() != "" || FromWire([]string{"x"}).String() != "(unreadable)" {
		t.Fatal("String of the empty or unreadable set")
	}
}

func TestRepository(t *testing.T) {
	for in, want := range map[string]string{
		"docker.io/library/nginx:1.27":           "docker.io/library/nginx",
		"docker.io/library/nginx@sha256:ab":      "docker.io/library/nginx",
		"docker.io/library/nginx:1.27@sha256:ab": "docker.io/library/nginx",
		"localhost:5000/app":                     "localhost:5000/app",
		"localhost:5000/app:v1":                  "localhost:5000/app",
		"registry.k8s.io/pause:3.10.2":           "registry.k8s.io/pause",
		"docker.io/library/nginx":                "docker.io/library/nginx",
	} {
		if got := repository(in); got != want {
			t.Errorf("repository(%q) = %q, want %q", in, got, want)
		}
	}
}
