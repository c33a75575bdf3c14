package dispatcher

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/lockbox-project/lockbox/api/types"
)

// withUnknown returns m as a peer that knows one more field (number 99)
// would send it: decoded by this build, the field is unknown.
func withUnknown[M proto.Message](t *testing.T, m M) M {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	b = protowire.AppendTag(b, 99, protowire.BytesType)
	b = protowire.AppendString(b, "k8s.namespace==prod")
	out := m.ProtoReflect().New().Interface().(M)
	if err := proto.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestHasUnknownFields(t *testing.T) {
	grant := func() *Grant {
		return &Grant{SecretId: "s", SecretName: "s", Target: &types.FileTarget{Name: "s", Uid: "0", Gid: "0", Mode: 0o400}, Signal: "SIGHUP"}
	}
	full := func() *ServiceGrants {
		return &ServiceGrants{ServiceId: "id", ServiceName: "db", Grants: []*Grant{grant()}, ClaimRules: []string{"k8s.namespace==a"}, LiveUpdate: true}
	}
	inGrant := full()
	inGrant.Grants = append(inGrant.Grants, withUnknown(t, grant()))
	inTarget := full()
	inTarget.Grants[0].Target = withUnknown(t, inTarget.Grants[0].Target)
	for _, tc := range []struct {
		name string
		m    proto.Message
		want bool
	}{
		{"nil", nil, false},
		{"empty", &ServiceGrants{}, false},
		{"every field known", full(), false},
		{"in the service", withUnknown(t, full()), true},
		{"in a grant", inGrant, true},
		{"in a target", inTarget, true},
		{"in a message's change", &SessionMessage{Changes: []*AssignmentChange{{Assignment: &Assignment{Item: &Assignment_Service{Service: withUnknown(t, full())}}}}}, true},
	} {
		if got := HasUnknownFields(tc.m); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
