package localapi

import (
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// ErrPeerGone: the process that connected has exited, so its pid may now
// name another process, and nothing read from /proc/<pid> describes the
// caller.
var ErrPeerGone = errors.New("the caller exited during its request")

// peerProc is a pidfd of the peer: it refers to the process that
// connected and never to another that later gets its pid.
type peerProc struct{ fd int }

// peerPin is Peer's hold on the process that connected: its pidfd, nil
// when the kernel gave none.
type peerPin struct{ proc *peerProc }

// openPeerProc takes a pidfd of conn's peer. SO_PEERPIDFD (Linux 6.5)
// gives the process the kernel recorded at connect. Before that, the pid
// SO_PEERCRED gave is opened now: the window in which that pid could have
// been reused shrinks to the time from connect to this accept. Without
// either (Linux before 5.3), nil: Alive then cannot tell, as before.
func openPeerProc(conn *net.UnixConn, pid int32) *peerProc {
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil
	}
	fd := -1
	raw.Control(func(s uintptr) {
		if v, err := unix.GetsockoptInt(int(s), unix.SOL_SOCKET, unix.SO_PEERPIDFD); err == nil {
			fd = v
		}
	})
	if fd < 0 && pid > 0 {
		if v, err := unix.PidfdOpen(int(pid), unix.PIDFD_NONBLOCK); err == nil {
			fd = v
		}
	}
	if fd < 0 {
		return nil
	}
	return &peerProc{fd: fd}
}

func (p *peerProc) close() {
	if p != nil {
		unix.Close(p.fd)
	}
}

// Alive reports whether the process that connected still runs (a zombie
// counts: its pid is not free until it is reaped). A caller that reads
// /proc/<Pid> to learn about the peer must call it after the read: a
// process that is alive then held its pid throughout, so what was read was
// its own. ErrPeerGone when it has exited.
func (p Peer) Alive() error {
	err := p.alive()
	if err == nil || errors.Is(err, ErrPeerGone) {
		return err
	}
	return fmt.Errorf("check the caller (pid %d): %w", p.Pid, err)
}

// alive is Alive for the pinned process: nil when nothing is pinned.
func (p peerPin) alive() error {
	if p.proc == nil {
		return nil
	}
	switch err := unix.PidfdSendSignal(p.proc.fd, 0, nil, 0); {
	case err == nil:
		return nil
	case errors.Is(err, unix.ESRCH):
		return ErrPeerGone
	default:
		return err
	}
}
