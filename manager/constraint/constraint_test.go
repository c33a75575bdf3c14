package constraint

import (
	"errors"
	"strings"
	"testing"

	"github.com/lockbox-project/lockbox/api/types"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    string // canonical form; "" means a parse error
		wantErr string
	}{
		{"node.id==abc", "node.id==abc", ""},
		{" node.hostname != web-1 ", "node.hostname!=web-1", ""},
		{"NODE.Hostname==Web", "node.hostname==Web", ""},
		{"node.labels.zone==east", "node.labels.zone==east", ""},
		{"node.labels.Zone==east", "node.labels.Zone==east", ""},
		{"node.platform.os==linux", "node.platform.os==linux", ""},
		{"node.platform.arch!=arm64", "node.platform.arch!=arm64", ""},
		{"node.role==Manager", "node.role==manager", ""},
		{"node.role==boss", "", "node.role is worker or manager"},
		{"node.id=abc", "", "want KEY==VALUE"},
		{"node.id", "", "want KEY==VALUE"},
		{"", "", "want KEY==VALUE"},
		{"==x", "", "empty key"},
		{"node.id==", "", "empty value"},
		{"node.id==a==b", "", "more than one operator"},
		{"node.id==a!=b", "", "more than one operator"},
		{"node.labels.==x", "", "empty label name"},
		{"node.labels.a b==x", "", "not allowed"},
		{"engine.labels.a==x", "", "unknown key"},
		{"node.ip==1.2.3.4", "", "unknown key"},
		{"node.id==a\x00", "", "control character"},
	}
	for _, tt := range tests {
		c, err := Parse(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("Parse(%q) = %v, want error", tt.in, c)
				continue
			}
			if !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Parse(%q) error %q, want it to say %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || c.String() != tt.want {
			t.Errorf("Parse(%q) = %q, %v; want %q", tt.in, c, err, tt.want)
		}
	}
}

func TestMatch(t *testing.T) {
	node := &types.Node{
		Id:          "n1",
		Role:        types.NodeRole_NODE_ROLE_WORKER,
		Spec:        &types.NodeSpec{Labels: map[string]string{"zone": "East", "ssd": "true"}},
		Description: &types.NodeDescription{Hostname: "web-1", Platform: &types.Platform{Os: "linux", Architecture: "amd64"}},
	}
	tests := []struct {
		c    string
		want bool
	}{
		{"node.id==n1", true},
		{"node.id==n2", false},
		{"node.id!=n2", true},
		{"node.hostname==WEB-1", true},
		{"node.role==worker", true},
		{"node.role==manager", false},
		{"node.role!=manager", true},
		{"node.platform.os==linux", true},
		{"node.platform.os==windows", false},
		{"node.platform.arch==amd64", true},
		{"node.labels.zone==east", true},
		{"node.labels.zone!=east", false},
		{"node.labels.missing==x", false},
		{"node.labels.missing!=x", true},
	}
	for _, tt := range tests {
		c, err := Parse(tt.c)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Match(node); got != tt.want {
			t.Errorf("%s matches = %v, want %v", tt.c, got, tt.want)
		}
	}
	all, _ := ParseAll([]string{"node.labels.ssd==true", "node.role==worker"})
	if !Match(all, node) || !Match(nil, node) {
		t.Fatal("all constraints hold, yet no match")
	}
	all, _ = ParseAll([]string{"node.labels.ssd==true", "node.role==manager"})
	if Match(all, node) {
		t.Fatal("one constraint fails, yet a match")
	}
	if _, err := ParseAll([]string{"node.id==x", "bad"}); err == nil {
		t.Fatal("ParseAll accepted a bad constraint")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"node.id==a", "node.labels.k!=v", "node.role==worker", "x", "==", "node.labels.==", "a==b!=c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse(s)
		if err != nil {
			return
		}
		// The canonical form parses back to the same constraint.
		again, err := Parse(c.String())
		if err != nil || again != c {
			t.Fatalf("Parse(%q) = %+v; its String %q parses to %+v, %v", s, c, c.String(), again, err)
		}
		_ = c.Match(&types.Node{})
	})
}
