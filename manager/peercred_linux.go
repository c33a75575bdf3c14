package manager

import (
	"fmt"
	"log/slog"
	"net"

	"golang.org/x/sys/unix"
)

// rootOnlyListener accepts only connections whose peer runs as uid 0,
// checked with SO_PEERCRED (what the kernel recorded at connect, not
// anything the client says).
type rootOnlyListener struct {
	*net.UnixListener
	log *slog.Logger
}

func (l rootOnlyListener) Accept() (net.Conn, error) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		uid, err := peerUID(c)
		if err == nil && uid == 0 {
			return c, nil
		}
		l.log.Warn("admin socket: refused a connection", "uid", uid, "err", err)
		c.Close()
	}
}

func peerUID(c *net.UnixConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	uid := -1
	var credErr error
	err = raw.Control(func(fd uintptr) {
		cred, e := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if e != nil {
			credErr = e
			return
		}
		uid = int(cred.Uid)
	})
	if err == nil {
		err = credErr
	}
	if err != nil {
		return -1, fmt.Errorf("SO_PEERCRED: %w", err)
	}
	return uid, nil
}

func listenAdminSocket(path string, log *slog.Logger) (net.Listener, error) {
	l, err := listenUnix(path)
	if err != nil {
		return nil, err
	}
	return rootOnlyListener{UnixListener: l, log: log}, nil
}
