package dispatcher

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/internal/testutil/protoext"
)

func TestHasUnknownFields(t *testing.T) {
	grant := func() *Grant {
		return &Grant{SecretId: "s", SecretName: "s", Target: &types.FileTarget{Name: "s", Uid: "0", Gid: "0", Mode: 0o400}, Signal: "SIGHUP"}
	}
	full := func() *ServiceGrants {
		return &ServiceGrants{ServiceId: "id", ServiceName: "db", Grants: []*Grant{grant()}, ClaimRules: []string{"k8s.namespace==a"}, LiveUpdate: true}
	}
	inGrant := full()
	inGrant.Grants = append(inGrant.Grants, protoext.WithUnknown(t, grant()))
	inTarget := full()
	inTarget.Grants[0].Target = protoext.WithUnknown(t, inTarget.Grants[0].Target)
	for _, tc := range []struct {
		name string
		m    proto.Message
		want bool
	}{
		{"nil", nil, false},
		{"empty", &ServiceGrants{}, false},
		{"every field known", full(), false},
		{"in the service", protoext.WithUnknown(t, full()), true},
		{"in a grant", inGrant, true},
		{"in a target", inTarget, true},
		{"in a message's change", &SessionMessage{Changes: []*AssignmentChange{{Assignment: &Assignment{Item: &Assignment_Service{Service: protoext.WithUnknown(t, full())}}}}}, true},
	} {
		if got := HasUnknownFields(tc.m); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
