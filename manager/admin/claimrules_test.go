package admin_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/admin"
)

// TestClaimRulesValidated: create and update refuse unknown keys,
// malformed rules and rules that can never hold, with InvalidArgument and
// a message that names the rule, and write nothing.
func TestClaimRulesValidated(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, admin.Config{}, "")
	e.createSecret(t, "pw", []byte("x"))
	refs := []*types.SecretReference{ref("pw", "", "", "", 0)}
	created, err := e.client.CreateService(ctx, &adminapi.CreateServiceRequest{Spec: svcSpec("web", refs)})
	if err != nil {
		t.Fatal(err)
	}
	before := dump(t, e)

	tests := []struct {
		name  string
		rules []string
		msg   string
	}{
		{"unknown key", []string{"image==docker.io/library/nginx"}, `unknown key "image"; use k8s.namespace, k8s.pod.label.<key>, containerd.namespace or container.image`},
		{"malformed", []string{"k8s.namespace=payments"}, `invalid claim rule "k8s.namespace=payments": want KEY==VALUE or KEY!=VALUE`},
		{"empty value", []string{"containerd.namespace=="}, "empty value"},
		{"empty key", []string{"==prod"}, "empty key"},
		{"not a namespace", []string{"k8s.namespace==Payments"}, "could never hold"},
		{"two namespaces", []string{"k8s.namespace==a", "k8s.namespace==b"}, `invalid claim rule "k8s.namespace==b": it and k8s.namespace==a can never both hold`},
		{"== and !=", []string{"containerd.namespace==prod", "containerd.namespace!=prod"}, "can never both hold"},
		{"label without namespace", []string{"k8s.pod.label.app==db"}, "needs a k8s.namespace==NAMESPACE rule"},
		{"too many", slices.Repeat([]string{"containerd.namespace==prod"}, 65), "at most 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := svcSpec("new", refs)
			spec.ClaimRules = tt.rules
			_, err := e.client.CreateService(ctx, &adminapi.CreateServiceRequest{Spec: spec})
			if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tt.msg) {
				t.Fatalf("create: %v, want InvalidArgument saying %q", err, tt.msg)
			}
			spec = svcSpec("web", refs)
			spec.ClaimRules = tt.rules
			_, err = e.client.UpdateService(ctx, &adminapi.UpdateServiceRequest{NameOrId: "web", Version: created.Service.Meta.Version, Spec: spec})
			if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tt.msg) {
				t.Fatalf("update: %v, want InvalidArgument saying %q", err, tt.msg)
			}
		})
	}
	if after := dump(t, e); after != before {
		t.Fatalf("store changed by refused calls:\nbefore %s\nafter  %s", before, after)
	}
}

// TestClaimRulesRoundTrip: rules are stored in canonical form without
// duplicates, returned by get and list, replaced by update, and an update
// that leaves them out removes them.
func TestClaimRulesRoundTrip(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, admin.Config{}, "")
	e.createSecret(t, "pw", []byte("x"))
	spec := svcSpec("db", []*types.SecretReference{ref("pw", "", "", "", 0)}, "node.labels.zone==east")
	spec.ClaimRules = []string{" K8S.Namespace == payments", "k8s.pod.label.app==db", "k8s.namespace==payments", "containerd.namespace==k8s.io"}
	resp, err := e.client.CreateService(ctx, &adminapi.CreateServiceRequest{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"k8s.namespace==payments", "k8s.pod.label.app==db", "containerd.namespace==k8s.io"}
	if got := resp.Service.Spec.ClaimRules; !slices.Equal(got, want) {
		t.Fatalf("created with rules %q, want %q", got, want)
	}
	get, err := e.client.GetService(ctx, &adminapi.GetServiceRequest{NameOrId: "db"})
	if err != nil {
		t.Fatal(err)
	}
	if got := get.Service.Spec.ClaimRules; !slices.Equal(got, want) {
		t.Fatalf("get: rules %q, want %q", got, want)
	}
	if got := get.Service.Spec.GetPlacement().GetConstraints(); !slices.Equal(got, []string{"node.labels.zone==east"}) {
		t.Fatalf("get: constraints %q", got)
	}
	list, err := e.client.ListServices(ctx, &adminapi.ListServicesRequest{})
	if err != nil || len(list.Services) != 1 || !slices.Equal(list.Services[0].Spec.ClaimRules, want) {
		t.Fatalf("list: %v, %v", list.GetServices(), err)
	}

	// Update replaces the rules.
	spec = get.Service.Spec
	spec.ClaimRules = []string{"containerd.namespace==prod", "container.image==docker.io/library/postgres"}
	upd, err := e.client.UpdateService(ctx, &adminapi.UpdateServiceRequest{NameOrId: "db", Version: get.Service.Meta.Version, Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	get, err = e.client.GetService(ctx, &adminapi.GetServiceRequest{NameOrId: "db"})
	if err != nil || !slices.Equal(get.Service.Spec.ClaimRules, spec.ClaimRules) || get.Service.Meta.Version != upd.Service.Meta.Version {
		t.Fatalf("after update: %v, %v", get.GetService().GetSpec().GetClaimRules(), err)
	}

	// An update without rules clears them: the spec is replaced whole.
	spec = get.Service.Spec
	spec.ClaimRules = nil
	if _, err := e.client.UpdateService(ctx, &adminapi.UpdateServiceRequest{NameOrId: "db", Version: get.Service.Meta.Version, Spec: spec}); err != nil {
		t.Fatal(err)
	}
	get, err = e.client.GetService(ctx, &adminapi.GetServiceRequest{NameOrId: "db"})
	if err != nil || len(get.Service.Spec.ClaimRules) != 0 {
		t.Fatalf("after clearing: %v, %v", get.GetService().GetSpec().GetClaimRules(), err)
	}
}
