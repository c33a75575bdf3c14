package mounter

import (
	"errors"
	"testing"
)

func TestValidateReferences(t *testing.T) {
	tests := []struct {
		name  string
		os    OS
		refs  []Grant
		field string // "" when accepted
	}{
		{"linux default target, no size", Linux, []Grant{{SecretID: "s1", SecretName: "db_pw"}}, ""},
		{"linux relative and absolute", Linux, []Grant{{SecretID: "s1", SecretName: "a", Target: "cfg/a"}, {SecretID: "s2", SecretName: "b", Target: "/etc/b", UID: "1000", Mode: 0o400}}, ""},
		{"linux climbing out", Linux, []Grant{{SecretID: "s1", SecretName: "a", Target: "../../etc/shadow"}}, "target"},
		{"linux bad uid", Linux, []Grant{{SecretID: "s1", SecretName: "a", UID: "-1"}}, "uid"},
		{"bad name", Linux, []Grant{{SecretID: "s1", SecretName: "-a"}}, "name"},
		{"windows default", Windows, []Grant{{SecretID: "s1", SecretName: "a"}}, ""},
		{"windows uid", Windows, []Grant{{SecretID: "s1", SecretName: "a", UID: "0"}}, "uid"},
		{"windows same target twice", Windows, []Grant{{SecretID: "s1", SecretName: "a", Target: `C:\x`}, {SecretID: "s2", SecretName: "b", Target: `c:\X`}}, "target"},
	}
	for _, tt := range tests {
		err := ValidateReferences(tt.os, tt.refs)
		var ve *ValidationError
		switch {
		case tt.field == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.field != "" && (!errors.As(err, &ve) || ve.Field != tt.field):
			t.Errorf("%s: %v, want a %s error", tt.name, err, tt.field)
		}
	}
	// The caller's references are not changed.
	refs := []Grant{{SecretID: "s1", SecretName: "a"}}
	if ValidateReferences(Linux, refs); refs[0].Size != 0 {
		t.Error("ValidateReferences changed its argument")
	}
}
