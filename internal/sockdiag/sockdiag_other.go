//go:build !linux

package sockdiag

import (
	"errors"
	"net/netip"
)

// ErrUnsupported: this platform has no sock_diag.
var ErrUnsupported = errors.New("closing accepted connections is supported on Linux only")

// DestroyAccepted is not supported here.
func DestroyAccepted(netip.AddrPort) (int, error) { return 0, ErrUnsupported }
