package grants

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/lockbox-project/lockbox/api/claimrule"
	"github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/internal/testutil/protoext"
)

// TestUnknownServiceFieldsRefuseEveryClaim: a service that arrives with a
// field this agent does not know, in the service, a grant or a target,
// keeps its place on the node and refuses every claim, with a reason that
// says so; the other services of the same message are untouched. Before
// the check, every such claim was admitted (the service has no rules this
// agent can see).
func TestUnknownServiceFieldsRefuseEveryClaim(t *testing.T) {
	plain := claimrule.Facts{ContainerdNamespace: "default"}
	for _, tc := range []struct {
		name   string
		newer  func(sg *dispatcher.ServiceGrants) *dispatcher.ServiceGrants
		refuse bool
	}{
		{"every field known", func(sg *dispatcher.ServiceGrants) *dispatcher.ServiceGrants { return sg }, false},
		{"unknown field in the service", func(sg *dispatcher.ServiceGrants) *dispatcher.ServiceGrants { return protoext.WithUnknown(t, sg) }, true},
		{"unknown field in a grant", func(sg *dispatcher.ServiceGrants) *dispatcher.ServiceGrants {
			sg.Grants[0] = protoext.WithUnknown(t, sg.Grants[0])
			return sg
		}, true},
		{"unknown field in a target", func(sg *dispatcher.ServiceGrants) *dispatcher.ServiceGrants {
			sg.Grants[0].Target = protoext.WithUnknown(t, sg.Grants[0].Target)
			return sg
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := service("d", "db", "s1")
			it := ch.GetAssignment().GetItem().(*dispatcher.Assignment_Service)
			it.Service = tc.newer(it.Service)
			msg := complete(1, secret("s1", "a", "alpha"), ch, service("w", "web", "s1"))
			// Through the wire, as the session receives it.
			b, err := proto.Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			msg = &dispatcher.SessionMessage{}
			if err := proto.Unmarshal(b, msg); err != nil {
				t.Fatal(err)
			}
			c := NewCache()
			defer c.Close()
			if err := c.Apply(msg); err != nil {
				t.Fatal(err)
			}
			db, err := c.Restrict("db")
			if err != nil {
				t.Fatalf("the service left the node: %v", err)
			}
			err = db.Rules().Decide(plain)
			var re *claimrule.RefusedError
			if !tc.refuse {
				if err != nil {
					t.Fatalf("claim refused: %v", err)
				}
				return
			}
			if !errors.As(err, &re) || !re.Unreadable || !strings.Contains(err.Error(), "does not know") {
				t.Fatalf("claim of a service with unknown fields: %v; want refused as unreadable", err)
			}
			if !errors.Is(db.Rules().Err(), ErrUnknownServiceFields) {
				t.Errorf("Rules().Err() = %v", db.Rules().Err())
			}
			web, err := c.Restrict("web")
			if err != nil || web.Rules().Decide(plain) != nil {
				t.Fatalf("the other service: %v", err)
			}
		})
	}
}
