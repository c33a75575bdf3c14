package agent

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/lockbox-project/lockbox/agent/errdefs"
	"github.com/lockbox-project/lockbox/agent/grants"
	api "github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/mounter"
)

// countingMounter builds mounts that hold nothing, and counts them: a
// refused claim must build none.
type countingMounter struct {
	mu     sync.Mutex
	builds int
}

func (m *countingMounter) Build(ctx context.Context, plan *mounter.Plan, src mounter.SecretSource) (mounter.Mount, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.builds++
	return fakeMount{}, nil
}

func (m *countingMounter) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.builds
}

type fakeMount struct{}

func (fakeMount) Attach(ctx context.Context, c mounter.Container) error { return nil }
func (fakeMount) Wipe() error                                           { return nil }

// The secret bytes of every service of ruledCache: none may reach a log.
const ruledSecret = "s3cr3t-bytes-never-logged"

// ruledCache holds services with claim rules: open (none), pay
// (k8s.namespace==payments), prod (containerd.namespace==prod), labelled
// (k8s.namespace==payments, k8s.pod.label.team==pay), img
// (container.image==docker.io/library/busybox) and newer (a rule this
// agent cannot read).
func ruledCache(t *testing.T) *grants.Cache {
	t.Helper()
	c := grants.NewCache()
	t.Cleanup(c.Close)
	changes := []*dispatcher.AssignmentChange{{Assignment: &dispatcher.Assignment{Item: &dispatcher.Assignment_Secret{
		Secret: &dispatcher.SecretData{Id: "s1", Name: "pw", Data: []byte(ruledSecret)}}}}}
	for i, svc := range []struct {
		name  string
		rules []string
	}{
		{"open", nil},
		{"pay", []string{"k8s.namespace==payments"}},
		{"prod", []string{"containerd.namespace==prod"}},
		{"labelled", []string{"k8s.namespace==payments", "k8s.pod.label.team==pay"}},
		{"img", []string{"container.image==docker.io/library/busybox"}},
		{"newer", []string{"node.future==x"}},
	} {
		changes = append(changes, &dispatcher.AssignmentChange{Assignment: &dispatcher.Assignment{Item: &dispatcher.Assignment_Service{Service: &dispatcher.ServiceGrants{
			ServiceId: "svc" + string(rune('a'+i)), ServiceName: svc.name, ClaimRules: svc.rules,
			Grants: []*dispatcher.Grant{{SecretId: "s1", SecretName: "pw"}}}}}})
	}
	if err := c.Apply(&dispatcher.SessionMessage{Type: dispatcher.SessionMessage_COMPLETE, Revision: 1, NodeId: "node-1", Changes: changes}); err != nil {
		t.Fatal(err)
	}
	return c
}

func pod(ns string) *api.PodFacts { return &api.PodFacts{Namespace: ns} }

// Both Prepare and Targets decide a claim with the service's claim rules
// on the adapter's facts, before anything is built: an admitted claim is
// served, a refused one is REFUSED with the service and the rule named,
// builds and holds nothing, is logged at warn without secret bytes and
// counted.
func TestClaimRulesDecide(t *testing.T) {
	tests := []struct {
		name    string
		service string
		facts   *api.ContainerFacts
		// refused: the rule the error must name ("" = admitted).
		refused string
	}{
		{"no facts, no rules", "open", nil, ""},
		{"ctr container, no rules", "open", &api.ContainerFacts{ContainerdNamespace: "default"}, ""},
		{"pod, no rules: secure default", "open", &api.ContainerFacts{Pod: pod("payments"), ContainerdNamespace: "k8s.io"}, "default rule"},
		{"pod in the named namespace", "pay", &api.ContainerFacts{Pod: pod("payments"), ContainerdNamespace: "k8s.io"}, ""},
		{"pod in another namespace", "pay", &api.ContainerFacts{Pod: pod("dev"), ContainerdNamespace: "k8s.io"}, `claim rule k8s.namespace==payments does not hold: the pod's namespace is "dev"`},
		{"pod whose namespace is unknown", "pay", &api.ContainerFacts{Pod: pod("")}, "claim rule k8s.namespace==payments does not hold"},
		{"no pod claims a pod's service", "pay", &api.ContainerFacts{ContainerdNamespace: "prod"}, "claim rule k8s.namespace==payments does not hold: the container is not in a Kubernetes pod"},
		{"no facts claims a pod's service", "pay", nil, "claim rule k8s.namespace==payments"},
		{"containerd namespace admitted", "prod", &api.ContainerFacts{ContainerdNamespace: "prod"}, ""},
		{"containerd namespace refused", "prod", &api.ContainerFacts{ContainerdNamespace: "dev"}, `claim rule containerd.namespace==prod does not hold: the containerd namespace is "dev"`},
		{"containerd namespace unknown", "prod", &api.ContainerFacts{}, "did not report the containerd namespace"},
		{"labels known and matching", "labelled", &api.ContainerFacts{Pod: &api.PodFacts{Namespace: "payments", Labels: map[string]string{"team": "pay"}, LabelsKnown: true}}, ""},
		{"labels unknown", "labelled", &api.ContainerFacts{Pod: &api.PodFacts{Namespace: "payments", Labels: map[string]string{"team": "pay"}}}, "claim rule k8s.pod.label.team==pay does not hold: the adapter that started the container did not report the pod's labels"},
		{"image matches", "img", &api.ContainerFacts{Image: "docker.io/library/busybox:1.36"}, ""},
		{"image unknown", "img", &api.ContainerFacts{ContainerdNamespace: "default"}, "did not report the image"},
		{"unreadable rules", "newer", &api.ContainerFacts{ContainerdNamespace: "default"}, "cannot read the service's claim rules"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			m := &countingMounter{}
			a, err := New(Config{StateDir: t.TempDir(), Grants: ruledCache(t), Mounter: m,
				Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			ctx := context.Background()
			c := &api.Container{Id: "c1", Service: tt.service, Os: "linux", Facts: tt.facts}
			_, terr := a.Targets(ctx, &api.TargetsRequest{Container: c})
			_, _, perr := a.Prepare(ctx, &api.PrepareRequest{Container: c, Attach: true})
			held, _ := a.List(ctx)
			if tt.refused == "" {
				if terr != nil || perr != nil {
					t.Fatalf("admitted claim: Targets %v, Prepare %v", terr, perr)
				}
				if m.count() != 1 || len(held.GetContainers()) != 1 {
					t.Fatalf("admitted claim: %d builds, holding %v", m.count(), held.GetContainers())
				}
				if logs.Len() != 0 {
					t.Fatalf("admitted claim logged at warn: %s", logs.String())
				}
				return
			}
			for op, err := range map[string]error{"Targets": terr, "Prepare": perr} {
				if errdefs.KindOf(err) != errdefs.Refused {
					t.Fatalf("%s: %v, want a refusal", op, err)
				}
				if want := `container c1 may not claim service "` + tt.service + `": `; !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), tt.refused) {
					t.Fatalf("%s: %q, want %q ... %q", op, err, want, tt.refused)
				}
			}
			if m.count() != 0 || len(held.GetContainers()) != 0 {
				t.Fatalf("refused claim: %d builds, holding %v", m.count(), held.GetContainers())
			}
			if recs, _ := a.records.list(); len(recs) != 0 {
				t.Fatalf("refused claim left records %v", recs)
			}
			out := logs.String()
			if n := strings.Count(out, "msg=\"claim refused\""); n != 2 {
				t.Fatalf("%d audit lines, want 2 (targets, prepare):\n%s", n, out)
			}
			for _, want := range []string{"level=WARN", "service=" + tt.service, "container=c1", "rule="} {
				if !strings.Contains(out, want) {
					t.Errorf("audit line lacks %q:\n%s", want, out)
				}
			}
			if tt.facts.GetPod() != nil && !strings.Contains(out, "k8s_namespace="+tt.facts.GetPod().GetNamespace()) {
				t.Errorf("audit line lacks the Kubernetes namespace:\n%s", out)
			}
			if ns := tt.facts.GetContainerdNamespace(); ns != "" && !strings.Contains(out, "containerd_namespace="+ns) {
				t.Errorf("audit line lacks the containerd namespace:\n%s", out)
			}
			if strings.Contains(out, ruledSecret) {
				t.Fatalf("audit line holds secret bytes:\n%s", out)
			}
			if got := a.RefusedClaims(); len(got) != 1 || got[0] != (RefusedClaim{Service: tt.service, Count: 2}) {
				t.Fatalf("refused claims %+v, want {%s 2}", got, tt.service)
			}
		})
	}
}

// A Prepare of a container the agent already holds is decided too, not
// answered from what the agent holds: a claim the rules do not admit (now)
// gets nothing, not even fresh fds of the held mount.
func TestClaimRulesDecideHeldContainerAgain(t *testing.T) {
	m := &countingMounter{}
	cache := ruledCache(t)
	a, err := New(Config{StateDir: t.TempDir(), Grants: cache, Mounter: m, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx := context.Background()
	admitted := &api.Container{Id: "c1", Service: "pay", Os: "linux", Facts: &api.ContainerFacts{Pod: pod("payments")}}
	if _, _, err := a.Prepare(ctx, &api.PrepareRequest{Container: admitted, Attach: true}); err != nil {
		t.Fatal(err)
	}
	refused := &api.Container{Id: "c1", Service: "pay", Os: "linux", Facts: &api.ContainerFacts{Pod: pod("dev")}}
	_, _, err = a.Prepare(ctx, &api.PrepareRequest{Container: refused, Attach: true})
	if errdefs.KindOf(err) != errdefs.Refused {
		t.Fatalf("second Prepare with other facts: %v, want refused", err)
	}
	if m.count() != 1 {
		t.Fatalf("%d builds, want 1", m.count())
	}
}
