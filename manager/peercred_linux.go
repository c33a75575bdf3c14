package manager

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/internal/sockdir"
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

// listenUnix listens on path with the socket itself 0600, in a directory
// that follows sockdir's rule: made 0700 when missing, never chmod'ed when
// it exists (an --admin-socket in /tmp must not close /tmp), refused when
// others could replace the socket.
func listenUnix(path string) (*net.UnixListener, error) {
	if err := sockdir.Ensure(filepath.Dir(path), "admin socket", filepath.Dir(DefaultAdminSocket)); err != nil {
		return nil, err
	}
	// A socket left by a crashed manager would make the listen fail.
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("admin socket: chmod %s: %w", path, err)
	}
	return l, nil
}
