package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrUnsupported: the kernel cannot destroy sockets (no
// CONFIG_INET_DIAG_DESTROY).
var ErrUnsupported = errors.New("the kernel cannot close sockets through sock_diag (CONFIG_INET_DIAG_DESTROY)")

// Sizes of the kernel's structures (linux/inet_diag.h, linux/netlink.h).
const (
	nlmsghdrLen   = 16
	sockIDLen     = 48 // inet_diag_sockid
	reqLen        = 8 + sockIDLen
	msgHeaderLen  = 4 // inet_diag_msg up to its sockid
	tcpEstablish  = 1 // TCP_ESTABLISHED
	allTCPStates  = 0xfff
	ipprotoTCP    = unix.IPPROTO_TCP
	maxDumpBuffer = 1 << 16
)

// DestroyAccepted closes every established TCP connection whose local end
// is local: the connections a listener on local accepted (outgoing
// connections have other local ports). An unspecified address (0.0.0.0,
// ::) matches every local address with that port. It returns how many it
// closed.
func DestroyAccepted(local netip.AddrPort) (int, error) {
	families := []uint8{unix.AF_INET, unix.AF_INET6}
	if a := local.Addr(); a.IsValid() && !a.IsUnspecified() && !a.Unmap().Is4() {
		families = families[1:]
	}
	n := 0
	for _, fam := range families {
		ids, err := dump(fam, local)
		if err != nil {
			return n, err
		}
		for _, id := range ids {
			switch err := destroy(fam, id); {
			case err == nil:
				n++
			case errors.Is(err, unix.ENOENT):
				// Closed meanwhile.
			case errors.Is(err, unix.EOPNOTSUPP):
				return n, ErrUnsupported
			default:
				return n, fmt.Errorf("sock_diag: destroy: %w", err)
			}
		}
	}
	return n, nil
}

// request encodes a netlink message carrying an inet_diag_req_v2.
func request(typ, flags uint16, family uint8, states uint32, id []byte) []byte {
	b := make([]byte, nlmsghdrLen+reqLen)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint16(b[6:], flags)
	binary.NativeEndian.PutUint32(b[8:], 1) // seq
	r := b[nlmsghdrLen:]
	r[0], r[1] = family, ipprotoTCP
	binary.NativeEndian.PutUint32(r[4:], states)
	copy(r[8:], id)
	return b
}

func open() (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return -1, fmt.Errorf("sock_diag: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("sock_diag: %w", err)
	}
	return fd, nil
}

// dump lists the sockids of the established TCP sockets of family whose
// local end is local.
func dump(family uint8, local netip.AddrPort) ([][]byte, error) {
	fd, err := open()
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	req := request(unix.SOCK_DIAG_BY_FAMILY, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, family, 1<<tcpEstablish, nil)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag: dump: %w", err)
	}
	var ids [][]byte
	buf := make([]byte, maxDumpBuffer)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("sock_diag: dump: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("sock_diag: dump: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return ids, nil
			case unix.NLMSG_ERROR:
				return nil, fmt.Errorf("sock_diag: dump: %w", netlinkErr(m.Data))
			case unix.SOCK_DIAG_BY_FAMILY:
				if len(m.Data) < msgHeaderLen+sockIDLen {
					continue
				}
				id := m.Data[msgHeaderLen : msgHeaderLen+sockIDLen]
				if matches(family, id, local) {
					ids = append(ids, append([]byte(nil), id...))
				}
			}
		}
	}
}

// matches reports whether sockid's local end is local.
func matches(family uint8, id []byte, local netip.AddrPort) bool {
	if binary.BigEndian.Uint16(id[0:2]) != local.Port() {
		return false
	}
	want := local.Addr()
	if !want.IsValid() || want.IsUnspecified() {
		return true
	}
	var got netip.Addr
	if family == unix.AF_INET {
		got = netip.AddrFrom4([4]byte(id[4:8]))
	} else {
		got = netip.AddrFrom16([16]byte(id[4:20]))
	}
	return got.Unmap() == want.Unmap()
}

// destroy closes the socket named by id (its cookie makes sure it is the
// same socket the dump saw).
func destroy(family uint8, id []byte) error {
	fd, err := open()
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	req := request(unix.SOCK_DESTROY, unix.NLM_F_REQUEST|unix.NLM_F_ACK, family, allTCPStates, id)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, os.Getpagesize())
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return err
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if m.Header.Type == unix.NLMSG_ERROR {
			return netlinkErr(m.Data)
		}
	}
	return nil
}

// netlinkErr reads an nlmsgerr: a negative errno, or 0 for an ACK.
func netlinkErr(data []byte) error {
	if len(data) < 4 {
		return errors.New("short netlink error")
	}
	if e := int32(binary.NativeEndian.Uint32(data[:4])); e < 0 {
		return unix.Errno(-e)
	}
	return nil
}
