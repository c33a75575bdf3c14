// Package etcdtest starts a real embedded etcd member for tests, in a temp
// dir, with its peer port on a free loopback port. It is for tests only.
package etcdtest

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/manager/etcd"
)

// FreeURL returns scheme://127.0.0.1:<free port>.
func FreeURL(t testing.TB, scheme string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return scheme + "://" + l.Addr().String()
}

// Start runs a single-member cluster for the test and stops it at cleanup.
func Start(t testing.TB) *etcd.Member {
	t.Helper()
	return StartIn(t, t.TempDir()+"/etcd")
}

// StartIn is Start with the member's data in dir, for tests that read it
// after closing the member early.
func StartIn(t testing.TB, dir string) *etcd.Member {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := etcd.Start(ctx, etcd.Config{Dir: dir, Name: "test", PeerURL: FreeURL(t, "http")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}
