// Package etcdtest starts a real, single-member embedded etcd for tests.
//
// It holds test plumbing only: a server in a temporary directory on
// 127.0.0.1 random ports and a client connected to it. It must not be
// imported by non-test code.
package etcdtest

import (
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is a running embedded etcd member.
type Server struct {
	Etcd    *embed.Etcd
	DataDir string
	// Endpoint is the client URL, such as http://127.0.0.1:41234.
	Endpoint string

	closed bool
}

// Start starts a single-member etcd in a directory under t.TempDir() and
// stops it when the test ends. Use Close to stop it earlier (for example to
// read its data directory while nothing writes to it).
func Start(tb testing.TB) *Server {
	tb.Helper()
	dir := tb.TempDir()
	s, err := StartIn(dir)
	if err != nil {
		tb.Fatalf("start etcd: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// StartIn starts a single-member etcd whose data lives in dir.
func StartIn(dir string) (*Server, error) {
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = dir
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	peer, err := freeURL()
	if err != nil {
		return nil, err
	}
	client, err := freeURL()
	if err != nil {
		return nil, err
	}
	cfg.ListenPeerUrls = []url.URL{*peer}
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.ListenClientUrls = []url.URL{*client}
	cfg.AdvertiseClientUrls = []url.URL{*client}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd failed: %w", err)
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s not ready after 30s", dir)
	}
	return &Server{Etcd: e, DataDir: dir, Endpoint: e.Clients[0].Addr().String()}, nil
}

// freeURL reserves a loopback port by listening on port 0. The tiny window
// between closing it and etcd binding it is acceptable in tests.
func freeURL() (*url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("reserve a port: %w", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		return nil, err
	}
	return &url.URL{Scheme: "http", Host: addr}, nil
}

// Client returns a client for the server, closed when the test ends.
func (s *Server) Client(tb testing.TB) *clientv3.Client {
	tb.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"http://" + s.Endpoint},
		DialTimeout: 10 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		tb.Fatalf("etcd client: %v", err)
	}
	tb.Cleanup(func() { _ = cli.Close() })
	return cli
}

// Close stops the server and waits until it has released its data directory.
func (s *Server) Close() {
	if s.closed {
		return
	}
	s.closed = true
	s.Etcd.Close()
}
