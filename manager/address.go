package manager

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"

	"github.com/lockbox-project/lockbox/api/types"
)

func (m *Manager) peerURL() (string, error) {
	host, port, err := net.SplitHostPort(m.advertise)
	if err != nil {
		return "", err
	}
	p := m.cfg.EtcdPeerPort
	if p == 0 {
		n, err := strconv.Atoi(port)
		if err != nil {
			return "", err
		}
		p = n + 1
	}
	return "https://" + net.JoinHostPort(host, strconv.Itoa(p)), nil
}

func advertiseAddr(flag, bound string) (string, error) {
	if flag != "" {
		if _, _, err := net.SplitHostPort(flag); err != nil {
			return "", fmt.Errorf("manager: --advertise-addr %q: want host:port", flag)
		}
		return flag, nil
	}
	host, port, err := net.SplitHostPort(bound)
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		return bound, nil
	}
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
				return net.JoinHostPort(n.IP.String(), port), nil
			}
		}
	}
	return net.JoinHostPort("127.0.0.1", port), nil
}

func describeSelf() *types.NodeDescription {
	host, _ := os.Hostname()
	return &types.NodeDescription{Hostname: host, Platform: &types.Platform{Os: runtime.GOOS, Architecture: runtime.GOARCH}}
}
