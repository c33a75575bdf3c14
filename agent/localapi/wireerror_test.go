//go:build linux || windows

package localapi

import (
	"fmt"
	"testing"

	"github.com/lockbox-project/lockbox/agent/errdefs"
	"github.com/lockbox-project/lockbox/api/agent"
)

// Every domain error kind reaches the wire with its code, once, here.
func TestWireErrorCodes(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want agent.Error_Code
	}{
		{errdefs.Errorf(errdefs.Invalid, "x"), agent.Error_INVALID},
		{errdefs.Errorf(errdefs.NotGranted, "x"), agent.Error_NOT_GRANTED},
		{errdefs.Errorf(errdefs.NotFound, "x"), agent.Error_NOT_FOUND},
		{fmt.Errorf("wrapped: %w", errdefs.Errorf(errdefs.Refused, `container c may not claim service "s": claim rule k8s.namespace==p does not hold`)), agent.Error_REFUSED},
		{fmt.Errorf("plain"), agent.Error_UNKNOWN},
		{Errorf(agent.Error_PERMISSION_DENIED, "x"), agent.Error_PERMISSION_DENIED},
	} {
		e := WireError(tt.err)
		if e.Code != tt.want || e.Message != tt.err.Error() && tt.want != agent.Error_PERMISSION_DENIED {
			t.Errorf("WireError(%v) = %v %q, want %v with the message", tt.err, e.Code, e.Message, tt.want)
		}
	}
}
