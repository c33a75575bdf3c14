package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestCLIServiceClaims: --claim on create, --claim-add/--claim-rm on
// update (a missing rule skipped, as docker's --constraint-rm does),
// inspect's ClaimRules next to Placement, and ls's CLAIMS column.
func TestCLIServiceClaims(t *testing.T) {
	e := newCLIEnv(t, "")
	e.mustRun(t, "x", "secret", "create", "pw", "-")
	e.mustRun(t, "", "service", "create", "db", "--secret", "pw",
		"--claim", "k8s.namespace == payments", "--claim", "k8s.pod.label.app==db")
	e.mustRun(t, "", "service", "create", "plain", "--secret", "pw")

	rules := func(name string) []string {
		t.Helper()
		svc, err := e.store.GetService(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		return svc.Spec.ClaimRules
	}
	if got, want := rules("db"), []string{"k8s.namespace==payments", "k8s.pod.label.app==db"}; !slices.Equal(got, want) {
		t.Fatalf("created with %q, want %q", got, want)
	}

	var insp []struct {
		Spec struct {
			Placement  map[string]any
			ClaimRules []string
		}
	}
	out := e.mustRun(t, "", "service", "inspect", "db", "plain")
	if err := json.Unmarshal([]byte(out), &insp); err != nil || len(insp) != 2 {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	if !slices.Equal(insp[0].Spec.ClaimRules, []string{"k8s.namespace==payments", "k8s.pod.label.app==db"}) || insp[0].Spec.Placement == nil {
		t.Fatalf("inspect db:\n%s", out)
	}
	if insp[1].Spec.ClaimRules == nil || len(insp[1].Spec.ClaimRules) != 0 || !strings.Contains(out, `"ClaimRules": []`) {
		t.Fatalf("inspect plain shows no empty ClaimRules:\n%s", out)
	}

	out = e.mustRun(t, "", "service", "ls")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "CLAIMS") ||
		!strings.Contains(lines[1], "k8s.namespace==payments,k8s.pod.label.app==db") || !strings.Contains(lines[2], "non-Kubernetes") {
		t.Fatalf("service ls:\n%s", out)
	}
	out = e.mustRun(t, "", "service", "ls", "--format", "{{.Name}} {{.ClaimRules}}")
	if !strings.Contains(out, "db [k8s.namespace==payments k8s.pod.label.app==db]") {
		t.Fatalf("service ls --format:\n%s", out)
	}

	// Update: remove one (in another spelling), skip one the service lacks,
	// add one.
	e.mustRun(t, "", "service", "update", "db", "--claim-rm", " k8s.pod.label.app == db",
		"--claim-rm", "containerd.namespace==nope", "--claim-add", "containerd.namespace==k8s.io")
	if got, want := rules("db"), []string{"k8s.namespace==payments", "containerd.namespace==k8s.io"}; !slices.Equal(got, want) {
		t.Fatalf("after update %q, want %q", got, want)
	}
	// Adding a rule the service has changes nothing.
	e.mustRun(t, "", "service", "update", "db", "--claim-add", "k8s.namespace==payments")
	if got := rules("db"); len(got) != 2 {
		t.Fatalf("after a second add: %q", got)
	}
	// The rules the service would end with must hold together; nothing is
	// written when they cannot.
	_, err := e.run(t, "", "service", "update", "db", "--claim-add", "k8s.namespace==dev")
	if err == nil || !strings.Contains(err.Error(), "can never both hold") || !strings.Contains(err.Error(), "service 'db' would have") {
		t.Fatalf("contradicting add: %v", err)
	}
	// Removing the namespace rule of a service with pod-label rules leaves
	// rules that admit no pod.
	e.mustRun(t, "", "service", "update", "db", "--claim-add", "k8s.pod.label.tier==backend")
	if _, err := e.run(t, "", "service", "update", "db", "--claim-rm", "k8s.namespace==payments"); err == nil || !strings.Contains(err.Error(), "needs a k8s.namespace==NAMESPACE rule") {
		t.Fatalf("rm of the namespace rule: %v", err)
	}
	if got := rules("db"); len(got) != 3 {
		t.Fatalf("refused updates changed the rules: %q", got)
	}
	// Clearing every rule is allowed: the default then holds.
	e.mustRun(t, "", "service", "update", "db", "--claim-rm", "k8s.pod.label.tier==backend", "--claim-rm", "k8s.namespace==payments", "--claim-rm", "containerd.namespace==k8s.io")
	if got := rules("db"); len(got) != 0 {
		t.Fatalf("after clearing: %q", got)
	}
}

// TestCLIClaimErrorsBeforeSending: bad rules are refused by the CLI itself,
// with the flag and the rule named, before any connection: the manager
// given here does not exist.
func TestCLIClaimErrorsBeforeSending(t *testing.T) {
	host := "unix://" + filepath.Join(t.TempDir(), "none.sock")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"service", "create", "s", "--claim", "image==nginx"}, `--claim: invalid claim rule "image==nginx": unknown key "image"; use k8s.namespace, k8s.pod.label.<key>, containerd.namespace or container.image`},
		{[]string{"service", "create", "s", "--claim", "k8s.namespace=a"}, "want KEY==VALUE or KEY!=VALUE"},
		{[]string{"service", "create", "s", "--claim", "containerd.namespace=="}, "empty value"},
		{[]string{"service", "create", "s", "--claim", "k8s.namespace==a", "--claim", "k8s.namespace==b"}, "can never both hold"},
		{[]string{"service", "create", "s", "--claim", "containerd.namespace==a", "--claim", "containerd.namespace!=a"}, "can never both hold"},
		{[]string{"service", "create", "s", "--claim", "k8s.pod.label.app==db"}, "needs a k8s.namespace==NAMESPACE rule"},
		{[]string{"service", "create", "s", "--claim", "k8s.namespace==Payments"}, "could never hold"},
		{[]string{"service", "update", "s", "--claim-add", "node.id==x"}, `--claim-add: invalid claim rule "node.id==x": unknown key`},
		{[]string{"service", "update", "s", "--claim-rm", "k8s.namespace"}, "--claim-rm: invalid claim rule"},
	}
	for _, tt := range tests {
		root := newRootCommand()
		root.SetArgs(append([]string{"-H", host, "--timeout", "5s"}, tt.args...))
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "cannot reach") {
			t.Errorf("lockbox %s: %v, want an error containing %q", strings.Join(tt.args, " "), err, tt.want)
		}
	}
}
