package session

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	caapi "github.com/lockbox-project/lockbox/api/ca"
	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/ca"
	"github.com/lockbox-project/lockbox/manager/dispatcher"
	"github.com/lockbox-project/lockbox/manager/etcd/etcdtest"
	"github.com/lockbox-project/lockbox/manager/keys"
	"github.com/lockbox-project/lockbox/manager/store"
)

// testManager is a manager assembled from the real control-plane pieces
// (embedded etcd, store, CA, dispatcher) behind a real mTLS gRPC listener
// that the test can stop and start again on the same address.
type testManager struct {
	t     *testing.T
	ctx   context.Context
	st    *store.Store
	ca    *ca.CA
	disp  *dispatcher.Dispatcher
	addr  string
	creds credentials.TransportCredentials
	srv   *grpc.Server
	done  chan struct{}
}

// dispatcherServer registers the dispatcher's RPCs, as the daemon does.
type dispatcherServer struct {
	dapi.UnimplementedDispatcherServer
	d *dispatcher.Dispatcher
}

func (s dispatcherServer) Session(req *dapi.SessionRequest, stream dapi.Dispatcher_SessionServer) error {
	return s.d.Session(req, stream)
}

func (s dispatcherServer) Heartbeat(ctx context.Context, req *dapi.HeartbeatRequest) (*dapi.HeartbeatResponse, error) {
	return s.d.Heartbeat(ctx, req)
}

// registrar records joining nodes in the store, as the manager daemon does.
type registrar struct{ st *store.Store }

func (r registrar) RegisterNode(ctx context.Context, id ca.Identity, desc *types.NodeDescription, certPEM []byte) error {
	_, err := r.st.CreateNode(ctx, &types.Node{Id: id.NodeID, Role: id.Role.NodeRole(), Description: desc})
	return err
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newTestManager(t *testing.T) *testManager {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	m := etcdtest.Start(t)
	ring, err := keys.NewKeyring()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ring.Close)
	st := store.New(m.Client(), ring)
	root, err := ca.NewRoot()
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Save(ctx, m.Client(), ring, root); err != nil {
		t.Fatal(err)
	}
	c, err := ca.Open(ctx, m.Client(), ring)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	kp, err := c.IssueKeyPair(ca.CertRequest{NodeID: "manager-1", Role: ca.RoleManager, IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	own, err := kp.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	d := dispatcher.New(dispatcher.Config{
		Store:           st,
		History:         dispatcher.EtcdHistory{Client: st.Client(), Prefix: st.Prefix()},
		Managers:        func() []string { return []string{addr} },
		HeartbeatPeriod: 200 * time.Millisecond,
		Logger:          quietLog(),
	})
	go d.Run(ctx)
	<-d.Ready()
	tm := &testManager{t: t, ctx: ctx, st: st, ca: c, disp: d, addr: addr, creds: credentials.NewTLS(c.ServerTLS(own))}
	tm.start()
	t.Cleanup(tm.stop)
	return tm
}

func (m *testManager) start() {
	m.t.Helper()
	ln, err := net.Listen("tcp", m.addr)
	if err != nil {
		m.t.Fatal(err)
	}
	m.srv = grpc.NewServer(grpc.Creds(m.creds))
	caapi.RegisterNodeCAServer(m.srv, ca.NewServer(m.ca, registrar{m.st}, func() []string { return []string{m.addr} }, quietLog()))
	dapi.RegisterDispatcherServer(m.srv, dispatcherServer{d: m.disp})
	m.done = make(chan struct{})
	go func(srv *grpc.Server, done chan struct{}) {
		srv.Serve(ln)
		close(done)
	}(m.srv, m.done)
}

// stop kills the listener and every stream, like a manager going away.
func (m *testManager) stop() {
	if m.srv == nil {
		return
	}
	m.srv.Stop()
	<-m.done
	m.srv = nil
}

func (m *testManager) token() string {
	m.t.Helper()
	tok, err := m.ca.JoinToken(m.ctx, ca.RoleWorker, false)
	if err != nil {
		m.t.Fatal(err)
	}
	return tok
}

func (m *testManager) secret(name, data string) *types.Secret {
	m.t.Helper()
	s, err := m.st.CreateSecret(m.ctx, &types.SecretSpec{Name: name}, []byte(data))
	if err != nil {
		m.t.Fatal(err)
	}
	return s
}

func serviceSpec(name string, secrets ...*types.Secret) *types.ServiceSpec {
	sp := &types.ServiceSpec{Name: name}
	for _, s := range secrets {
		sp.Secrets = append(sp.Secrets, &types.SecretReference{SecretId: s.Id, SecretName: s.Spec.Name, Target: &types.FileTarget{Name: s.Spec.Name}})
	}
	return sp
}

func (m *testManager) service(name string, secrets ...*types.Secret) *types.Service {
	m.t.Helper()
	s, err := m.st.CreateService(m.ctx, serviceSpec(name, secrets...))
	if err != nil {
		m.t.Fatal(err)
	}
	return s
}

func (m *testManager) updateService(svc *types.Service, secrets ...*types.Secret) *types.Service {
	m.t.Helper()
	s, err := m.st.UpdateService(m.ctx, svc.Id, svc.Meta.Version, serviceSpec(svc.Spec.Name, secrets...))
	if err != nil {
		m.t.Fatal(err)
	}
	return s
}
