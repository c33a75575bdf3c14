package admin_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/admin"
)

// TestServiceNameRuleOnCreateOnly: new services follow swarm's service
// rule (no '.', at most 63); a service recorded under the older rule (the
// secret rule: '.' allowed, 64) keeps working: it is found, updated and
// removed through the admin API.
func TestServiceNameRuleOnCreateOnly(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, admin.Config{}, "")
	e.createSecret(t, "pw", []byte("x"))
	legacy := "legacy.web." + strings.Repeat("x", 53) // 64 characters with dots
	// The store takes any name the old rule allowed: record it directly,
	// as an older manager did.
	if _, err := e.store.CreateService(ctx, svcSpec(legacy, nil)); err != nil {
		t.Fatal(err)
	}
	_, err := e.client.CreateService(ctx, &adminapi.CreateServiceRequest{Spec: svcSpec("new.web", nil)})
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "swarm's rule for service names") {
		t.Fatalf("create new.web: %v", err)
	}
	cur, err := e.client.GetService(ctx, &adminapi.GetServiceRequest{NameOrId: legacy})
	if err != nil {
		t.Fatal(err)
	}
	spec := cur.Service.Spec
	spec.Secrets = []*types.SecretReference{ref("pw", "", "", "", 0)}
	if _, err := e.client.UpdateService(ctx, &adminapi.UpdateServiceRequest{NameOrId: legacy, Version: cur.Service.Meta.Version, Spec: spec}); err != nil {
		t.Fatalf("update of a service named under the older rule: %v", err)
	}
	if _, err := e.client.RemoveService(ctx, &adminapi.RemoveServiceRequest{NameOrId: strings.ToUpper(legacy)}); err != nil {
		t.Fatalf("remove by the name in other case: %v", err)
	}
}
