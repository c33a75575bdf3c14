//go:build !linux

package manager

import (
	"errors"
	"log/slog"
	"net"
)

// listenAdminSocket: without SO_PEERCRED the socket cannot check its
// callers, so it is not offered; use TCP with admin credentials.
func listenAdminSocket(string, *slog.Logger) (net.Listener, error) {
	return nil, errors.New("the admin socket needs Linux (SO_PEERCRED); use --admin-socket='' and TCP with admin credentials")
}
