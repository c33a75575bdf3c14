package validation

import (
	"regexp"
	"strings"
	"testing"
)

// nameRE is swarm's rule as a regular expression: the oracle ValidName
// must agree with.
var nameRE = regexp.MustCompile(`^[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?$`)

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"a", true}, {"web", true}, {"a.b-c_d", true}, {"9", true}, {"db_pw", true},
		{"", false}, {"-a", false}, {"a-", false}, {".a", false}, {"a.", false}, {"_", false},
		{"a b", false}, {"a/b", false}, {"é", false}, {"a\n", false}, {"a\x00b", false}, {"..", false},
		{strings.Repeat("a", MaxNameLen), true},
		{strings.Repeat("a", MaxNameLen+1), false},
	}
	for _, tt := range tests {
		if got := ValidName(tt.name); got != tt.ok {
			t.Errorf("ValidName(%q) = %v, want %v", tt.name, got, tt.ok)
		}
	}
}

func FuzzValidName(f *testing.F) {
	for _, s := range []string{"web", "-a", "a.b", "", "a\x00", "a-_.b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := len(s) <= MaxNameLen && nameRE.MatchString(s)
		if got := ValidName(s); got != want {
			t.Errorf("ValidName(%q) = %v, the rule says %v", s, got, want)
		}
	})
}

func TestValidSecretSize(t *testing.T) {
	for n, ok := range map[int64]bool{-1: false, 0: false, 1: true, MaxSecretSize - 1: true, MaxSecretSize: false, 1 << 40: false} {
		if got := ValidSecretSize(n); got != ok {
			t.Errorf("ValidSecretSize(%d) = %v, want %v", n, got, ok)
		}
	}
}

// serviceNameRE is swarm's service rule (swarmkit manager/controlapi
// common.go isValidDNSName): the oracle ValidServiceName must agree with,
// together with the 63-character limit.
var serviceNameRE = regexp.MustCompile(`^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$`)

func TestValidServiceName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"web", true}, {"my_stack_web", true}, {"a--b__c", true}, {"9", true}, {"Web-1", true},
		{"a.b", false}, {"", false}, {"-a", false}, {"a_", false}, {"a b", false}, {"é", false},
		{strings.Repeat("a", MaxServiceNameLen), true},
		{strings.Repeat("a", MaxServiceNameLen+1), false},
	}
	for _, tt := range tests {
		if got := ValidServiceName(tt.name); got != tt.ok {
			t.Errorf("ValidServiceName(%q) = %v, want %v", tt.name, got, tt.ok)
		}
		if tt.ok && !ValidName(tt.name) {
			t.Errorf("%q is a service name but not a name nodes accept", tt.name)
		}
	}
}

func FuzzValidServiceName(f *testing.F) {
	for _, s := range []string{"web", "a.b", "a-_b", "", "-", strings.Repeat("z", 64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := len(s) <= MaxServiceNameLen && serviceNameRE.MatchString(s)
		if got := ValidServiceName(s); got != want {
			t.Errorf("ValidServiceName(%q) = %v, the rule says %v", s, got, want)
		}
		if want && !ValidName(s) {
			t.Errorf("%q: a service name nodes would refuse", s)
		}
	})
}
