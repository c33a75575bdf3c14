package claimrule

import (
	"errors"
	"strings"
	"testing"
)

func TestDecide(t *testing.T) {
	payments := &Pod{Namespace: "payments", Labels: map[string]string{"app": "db", "tier": "backend"}, LabelsKnown: true}
	dev := &Pod{Namespace: "dev", Labels: map[string]string{"app": "db"}, LabelsKnown: true}
	noLabels := &Pod{Namespace: "payments"} // an adapter that cannot see pod labels
	plain := Facts{ContainerdNamespace: "prod", Image: "docker.io/library/nginx:1.27"}
	pod := func(p *Pod) Facts {
		return Facts{Pod: p, ContainerdNamespace: "k8s.io", Image: "docker.io/library/nginx:1.27"}
	}
	tests := []struct {
		name  string
		rules []string
		facts Facts
		// want: "" admitted; "default"; "unreadable"; otherwise the rule
		// that fails, then ": " and a piece of the reason.
		want string
	}{
		// The default.
		{"no rules, plain container", nil, plain, ""},
		{"no rules, nothing known", nil, Facts{}, ""},
		{"no rules, pod", nil, pod(payments), "default"},
		{"containerd rule only, pod", []string{"containerd.namespace==k8s.io"}, pod(payments), "default"},
		{"pod with an empty namespace, no rules", nil, pod(&Pod{}), "default"},

		// k8s.namespace.
		{"namespace admits its pod", []string{"k8s.namespace==payments"}, pod(payments), ""},
		{"namespace refuses another", []string{"k8s.namespace==payments"}, pod(dev), `k8s.namespace==payments: the pod's namespace is "dev"`},
		{"namespace refuses a plain container", []string{"k8s.namespace==payments"}, plain, "k8s.namespace==payments: the container is not in a Kubernetes pod"},
		{"namespace unknown", []string{"k8s.namespace==payments"}, pod(&Pod{LabelsKnown: true}), "k8s.namespace==payments: not report the pod's namespace"},
		{"namespace == and !=", []string{"k8s.namespace==payments", "k8s.namespace!=dev"}, pod(payments), ""},

		// k8s.pod.label.
		{"label holds", []string{"k8s.namespace==payments", "k8s.pod.label.app==db"}, pod(payments), ""},
		{"label differs", []string{"k8s.namespace==payments", "k8s.pod.label.tier==web"}, pod(payments), `k8s.pod.label.tier==web: the pod's label "tier" is "backend"`},
		{"label missing ==", []string{"k8s.namespace==payments", "k8s.pod.label.team==x"}, pod(payments), `k8s.pod.label.team==x: the pod has no label "team"`},
		{"label missing !=", []string{"k8s.namespace==payments", "k8s.pod.label.team!=x"}, pod(payments), ""},
		{"label != holds", []string{"k8s.namespace==payments", "k8s.pod.label.tier!=web"}, pod(payments), ""},
		{"label != fails", []string{"k8s.namespace==payments", "k8s.pod.label.tier!=backend"}, pod(payments), `k8s.pod.label.tier!=backend: the pod's label "tier" is "backend"`},
		{"labels unknown ==", []string{"k8s.namespace==payments", "k8s.pod.label.app==db"}, pod(noLabels), "k8s.pod.label.app==db: not report the pod's labels"},
		{"labels unknown != fails closed", []string{"k8s.namespace==payments", "k8s.pod.label.app!=web"}, pod(noLabels), "k8s.pod.label.app!=web: not report the pod's labels"},
		{"label case matters", []string{"k8s.namespace==payments", "k8s.pod.label.App==db"}, pod(payments), `the pod has no label "App"`},

		// containerd.namespace.
		{"containerd ns holds", []string{"containerd.namespace==prod"}, plain, ""},
		{"containerd ns differs", []string{"containerd.namespace==prod"}, Facts{ContainerdNamespace: "default"}, `containerd.namespace==prod: the containerd namespace is "default"`},
		{"containerd ns case matters", []string{"containerd.namespace==prod"}, Facts{ContainerdNamespace: "Prod"}, `the containerd namespace is "Prod"`},
		{"containerd ns != holds", []string{"containerd.namespace!=default"}, plain, ""},
		{"containerd ns unknown ==", []string{"containerd.namespace==prod"}, Facts{Image: "x"}, "containerd.namespace==prod: not report the containerd namespace"},
		{"containerd ns unknown != fails closed", []string{"containerd.namespace!=default"}, Facts{}, "containerd.namespace!=default: not report the containerd namespace"},
		{"pod in its containerd ns", []string{"k8s.namespace==payments", "containerd.namespace==k8s.io"}, pod(payments), ""},

		// container.image.
		{"image exact", []string{"container.image==docker.io/library/nginx:1.27"}, plain, ""},
		{"image repository", []string{"container.image==docker.io/library/nginx"}, plain, ""},
		{"image other tag", []string{"container.image==docker.io/library/nginx:1.26"}, plain, `container.image==docker.io/library/nginx:1.26: the image is "docker.io/library/nginx:1.27"`},
		{"image prefix is not a repository", []string{"container.image==docker.io/library/ng"}, plain, "container.image==docker.io/library/ng: the image is"},
		{"image != repository", []string{"container.image!=docker.io/library/nginx"}, plain, `container.image!=docker.io/library/nginx: the image is "docker.io/library/nginx:1.27"`},
		{"image != other", []string{"container.image!=docker.io/library/redis"}, plain, ""},
		{"image unknown != fails closed", []string{"container.image!=docker.io/library/redis"}, Facts{ContainerdNamespace: "prod"}, "not report the image"},

		// The first failing rule, in the service's order.
		{"first failing rule", []string{"containerd.namespace==prod", "container.image==docker.io/library/redis", "containerd.namespace!=prod"}, Facts{ContainerdNamespace: "prod", Image: "docker.io/library/nginx:1"}, "container.image==docker.io/library/redis: the image is"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Set
			if tt.name == "first failing rule" {
				// Contradictory sets are refused by ParseSet; build one by
				// hand to see the order Decide checks in.
				for _, r := range tt.rules {
					p, err := Parse(r)
					if err != nil {
						t.Fatal(err)
					}
					s.rules = append(s.rules, p)
				}
			} else {
				var err error
				if s, err = ParseSet(tt.rules); err != nil {
					t.Fatal(err)
				}
			}
			err := s.Decide(tt.facts)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var re *RefusedError
			if !errors.As(err, &re) || !errors.Is(err, ErrRefused) {
				t.Fatalf("Decide = %v, want a refusal", err)
			}
			switch tt.want {
			case "default":
				if !re.Default || re.Rule != "" || !strings.Contains(err.Error(), "k8s.namespace==NAMESPACE") {
					t.Fatalf("Decide = %+v (%v), want the default", re, err)
				}
				return
			}
			if re.Default || re.Unreadable || !strings.Contains(err.Error(), "does not hold") {
				t.Fatalf("Decide = %+v (%v), want a failing rule", re, err)
			}
			rule, reason, ok := strings.Cut(tt.want, ": ")
			if !ok {
				rule, reason = "", tt.want
			}
			if rule != "" && re.Rule != rule || !strings.Contains(re.Reason, reason) {
				t.Fatalf("Decide = %q (rule %q), want rule %q and a reason saying %q", err, re.Rule, rule, reason)
			}
		})
	}
}

func TestDecideUnreadable(t *testing.T) {
	// A newer manager's key this agent does not know: the service stays on
	// the node but nothing may claim it, whatever the facts.
	s := FromWire([]string{"containerd.namespace==prod", "k8s.serviceaccount==db"})
	if s.Err() == nil || s.Len() != 0 {
		t.Fatalf("FromWire read unknown rules: %d rules, err %v", s.Len(), s.Err())
	}
	for _, f := range []Facts{{}, {ContainerdNamespace: "prod"}, {Pod: &Pod{Namespace: "x"}}} {
		err := s.Decide(f)
		var re *RefusedError
		if !errors.As(err, &re) || !re.Unreadable || !strings.Contains(err.Error(), "k8s.serviceaccount") {
			t.Fatalf("Decide(%+v) = %v, want an unreadable refusal", f, err)
		}
	}
	// Rules that read well arrive intact.
	if s := FromWire([]string{"k8s.namespace==a"}); s.Err() != nil || s.Decide(Facts{Pod: &Pod{Namespace: "a"}}) != nil {
		t.Fatalf("FromWire of good rules: %v", s.Err())
	}
}

func TestDecideHandBuiltRule(t *testing.T) {
	for _, r := range []Rule{{Key: "made.up", Op: Ne, Value: "x"}, {Key: "made.up", Label: "x", Op: Ne, Value: "x"}, {Key: KeyK8sPodLabelPrefix + "x", Op: Ne, Value: "x"}} {
		s := Set{rules: []Rule{r}}
		if err := s.Decide(Facts{}); !errors.Is(err, ErrRefused) {
			t.Fatalf("hand-built rule %+v admitted: %v", r, err)
		}
	}
}
