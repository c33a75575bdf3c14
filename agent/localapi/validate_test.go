package localapi

import (
	"regexp"
	"testing"
)

// serviceNameRE is the managers' rule (manager/admin), restated here as
// the oracle.
var serviceNameRE = regexp.MustCompile(`^[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?$`)

func TestValidServiceName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"a", true}, {"web", true}, {"a.b-c_d", true}, {"9", true},
		{"", false}, {"-a", false}, {"a-", false}, {".a", false}, {"a.", false},
		{"a b", false}, {"a/b", false}, {"é", false}, {"a\n", false},
		{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", true},
		{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
	}
	for _, tt := range tests {
		if got := ValidServiceName(tt.name); got != tt.ok {
			t.Errorf("ValidServiceName(%q) = %v, want %v", tt.name, got, tt.ok)
		}
	}
}

func FuzzValidServiceName(f *testing.F) {
	for _, s := range []string{"web", "-a", "a.b", "", "a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := len(s) <= maxServiceName && serviceNameRE.MatchString(s)
		if got := ValidServiceName(s); got != want {
			t.Errorf("ValidServiceName(%q) = %v, the rule says %v", s, got, want)
		}
	})
}
