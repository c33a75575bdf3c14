package errdefs

import (
	"errors"
	"fmt"
	"testing"
)

func TestKindOf(t *testing.T) {
	inner := Errorf(NotGranted, "service %q has no grant", "web")
	tests := []struct {
		err  error
		want Kind
		msg  string
	}{
		{inner, NotGranted, `service "web" has no grant`},
		{fmt.Errorf("container c1: %w", inner), NotGranted, `container c1: service "web" has no grant`},
		{Errorf(Invalid, "bad id"), Invalid, "bad id"},
		{fmt.Errorf("prepare: %w", Errorf(Refused, "container c may not claim service s")), Refused, "prepare: container c may not claim service s"},
		{fmt.Errorf("plain"), Unknown, "plain"},
		{nil, Unknown, ""},
	}
	for _, tt := range tests {
		if got := KindOf(tt.err); got != tt.want {
			t.Errorf("KindOf(%v) = %v, want %v", tt.err, got, tt.want)
		}
		if tt.err != nil && tt.err.Error() != tt.msg {
			t.Errorf("message %q, want %q", tt.err.Error(), tt.msg)
		}
	}
}

// A %w verb's error stays reachable through Errorf (the claim-rule refusal
// is checked with errors.Is on what the agent returns).
func TestErrorfKeepsWrapped(t *testing.T) {
	cause := errors.New("the cause")
	err := Errorf(Refused, "container c: %w", cause)
	if !errors.Is(err, cause) {
		t.Errorf("errors.Is(%v, cause) = false", err)
	}
	if KindOf(err) != Refused || err.Error() != "container c: the cause" {
		t.Errorf("kind %v, message %q", KindOf(err), err)
	}
}
