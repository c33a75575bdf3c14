// Package managertest runs a real Lockbox manager (package manager: embedded
// etcd, CA, dispatcher, admin API) inside a test process, on a fixed
// loopback port so that it can be stopped and started again at the same
// address, and drives it through its admin socket like the CLI does.
package managertest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager"
)

// Manager is one manager running in the test process.
type Manager struct {
	// Addr is the host:port agents dial.
	Addr string
	t    testing.TB
	cfg  manager.Config

	cancel context.CancelFunc
	done   chan error
	admin  adminapi.AdminClient
	conn   *grpc.ClientConn
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start initialises a cluster and runs its first manager until the test
// ends.
func Start(t testing.TB) *Manager { return start(t, "", "") }

// Join runs another manager that joins first's cluster.
func (first *Manager) Join(t testing.TB) *Manager {
	t.Helper()
	resp, err := first.admin.GetJoinToken(first.ctx(), &adminapi.GetJoinTokenRequest{Role: types.NodeRole_NODE_ROLE_MANAGER})
	if err != nil {
		t.Fatal(err)
	}
	return start(t, first.Addr, resp.GetToken())
}

func start(t testing.TB, joinAddr, joinToken string) *Manager {
	t.Helper()
	dir := t.TempDir()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("LOCKBOX_TEST_VERBOSE") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	m := &Manager{Addr: addr, t: t, cfg: manager.Config{
		DataDir:         filepath.Join(dir, "data"),
		ListenAddr:      addr,
		AdvertiseAddr:   addr,
		AdminSocket:     filepath.Join(dir, "run", "manager.sock"),
		EtcdPeerPort:    freePort(t),
		HeartbeatPeriod: 500 * time.Millisecond,
		Logger:          log,
		Out:             io.Discard,
		JoinAddr:        joinAddr,
		JoinToken:       []byte(joinToken),
	}}
	m.start()
	t.Cleanup(func() {
		m.Stop()
		if m.conn != nil {
			m.conn.Close()
		}
	})
	return m
}

func (m *Manager) start() {
	m.t.Helper()
	mgr, err := manager.New(m.cfg)
	if err != nil {
		m.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel, m.done = cancel, make(chan error, 1)
	go func() { m.done <- mgr.Run(ctx) }()
	select {
	case <-mgr.Ready():
	case err := <-m.done:
		m.t.Fatalf("manager did not start: %v", err)
	case <-time.After(90 * time.Second):
		m.t.Fatal("manager not ready after 90s")
	}
	if m.conn == nil {
		conn, err := grpc.NewClient("unix://"+m.cfg.AdminSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			m.t.Fatal(err)
		}
		m.conn, m.admin = conn, adminapi.NewAdminClient(conn)
	}
}

// Stop stops the manager: its listener and every session go away.
func (m *Manager) Stop() {
	if m.cancel == nil {
		return
	}
	m.cancel()
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		m.t.Error("manager did not stop in 30s")
	}
	m.cancel = nil
}

// Restart starts the stopped manager again from its data directory.
func (m *Manager) Restart() { m.start() }

func (m *Manager) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	m.t.Cleanup(cancel)
	return ctx
}

// WorkerToken returns the cluster's worker join token.
func (m *Manager) WorkerToken() string {
	m.t.Helper()
	resp, err := m.admin.GetJoinToken(m.ctx(), &adminapi.GetJoinTokenRequest{Role: types.NodeRole_NODE_ROLE_WORKER})
	if err != nil {
		m.t.Fatal(err)
	}
	return resp.GetToken()
}

// Secret creates a secret.
func (m *Manager) Secret(name string, data []byte) *types.Secret {
	m.t.Helper()
	resp, err := m.admin.CreateSecret(m.ctx(), &adminapi.CreateSecretRequest{Spec: &types.SecretSpec{Name: name}, Data: data})
	if err != nil {
		m.t.Fatal(err)
	}
	return resp.GetSecret()
}

// ServiceSpec is a service that mounts secrets at their names, placed on
// every node.
func ServiceSpec(name string, secrets ...*types.Secret) *types.ServiceSpec {
	sp := &types.ServiceSpec{Name: name}
	for _, s := range secrets {
		sp.Secrets = append(sp.Secrets, &types.SecretReference{SecretId: s.GetId(), SecretName: s.GetSpec().GetName(), Target: &types.FileTarget{Name: s.GetSpec().GetName()}})
	}
	return sp
}

// Service creates a service.
func (m *Manager) Service(name string, secrets ...*types.Secret) *types.Service {
	m.t.Helper()
	resp, err := m.admin.CreateService(m.ctx(), &adminapi.CreateServiceRequest{Spec: ServiceSpec(name, secrets...)})
	if err != nil {
		m.t.Fatal(err)
	}
	return resp.GetService()
}

// UpdateService replaces a service's secret references.
func (m *Manager) UpdateService(svc *types.Service, secrets ...*types.Secret) *types.Service {
	m.t.Helper()
	resp, err := m.admin.UpdateService(m.ctx(), &adminapi.UpdateServiceRequest{NameOrId: svc.GetId(), Version: svc.GetMeta().GetVersion(), Spec: ServiceSpec(svc.GetSpec().GetName(), secrets...)})
	if err != nil {
		m.t.Fatal(err)
	}
	return resp.GetService()
}

// Admin is the manager's admin API, as the CLI reaches it.
func (m *Manager) Admin() adminapi.AdminClient { return m.admin }

// Node returns a node as the manager knows it.
func (m *Manager) Node(id string) *types.Node {
	m.t.Helper()
	resp, err := m.admin.GetNode(m.ctx(), &adminapi.GetNodeRequest{NameOrId: id})
	if err != nil {
		m.t.Fatal(err)
	}
	return resp.GetNode()
}

// RemoveNode removes a node from the cluster (force: even while it is up).
func (m *Manager) RemoveNode(id string) {
	m.t.Helper()
	if _, err := m.admin.RemoveNode(m.ctx(), &adminapi.RemoveNodeRequest{NameOrId: id, Force: true}); err != nil {
		m.t.Fatal(err)
	}
}
