//go:build linux

package manager

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/internal/testutil/logbuf"
	"github.com/lockbox-project/lockbox/pki"
	"github.com/lockbox-project/lockbox/pki/jointoken"
)

// freePort returns a loopback port nobody listens on right now.
func freePort(t testing.TB, ip string) int {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type testManager struct {
	*Manager
	t      testing.TB
	cancel context.CancelFunc
	done   chan error
	out    *logbuf.Buffer
	dir    string
	sock   string
	cfg    Config
	once   sync.Once
}

func testConfig(t testing.TB, ip string) Config {
	dir := t.TempDir()
	cfg := Config{
		DataDir:         filepath.Join(dir, "data"),
		ListenAddr:      net.JoinHostPort(ip, "0"),
		AdminSocket:     filepath.Join(dir, "run", "manager.sock"),
		EtcdPeerPort:    freePort(t, ip),
		HeartbeatPeriod: time.Second,
		Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if os.Getenv("LOCKBOX_TEST_VERBOSE") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
		cfg.EtcdLogger, _ = zap.NewDevelopment()
	}
	return cfg
}

// startManager runs a manager in this process until the test ends.
func startManager(t testing.TB, cfg Config) *testManager {
	t.Helper()
	out := &logbuf.Buffer{}
	cfg.Out = out
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tm := &testManager{Manager: m, t: t, cancel: cancel, done: make(chan error, 1), out: out, dir: cfg.DataDir, sock: cfg.AdminSocket, cfg: cfg}
	go func() { tm.done <- m.Run(ctx) }()
	select {
	case <-m.Ready():
	case err := <-tm.done:
		t.Fatalf("manager did not start: %v", err)
	case <-time.After(90 * time.Second):
		t.Fatal("manager not ready after 90s")
	}
	t.Cleanup(tm.stop)
	return tm
}

func (tm *testManager) stop() {
	tm.once.Do(func() {
		tm.cancel()
		select {
		case <-tm.done:
		case <-time.After(30 * time.Second):
			tm.t.Error("manager did not stop in 30s")
		}
	})
}

func (tm *testManager) admin() adminapi.AdminClient {
	tm.t.Helper()
	conn, err := grpc.NewClient("unix://"+tm.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tm.t.Fatal(err)
	}
	tm.t.Cleanup(func() { conn.Close() })
	return adminapi.NewAdminClient(conn)
}

func (tm *testManager) rootPEM() []byte {
	b, err := os.ReadFile(filepath.Join(tm.dir, "certs", "ca.crt"))
	if err != nil {
		tm.t.Fatal(err)
	}
	return b
}

// adminCert is the admin credentials written at init.
func (tm *testManager) adminCert() tls.Certificate {
	c, err := tls.LoadX509KeyPair(filepath.Join(tm.dir, "admin", "cert.pem"), filepath.Join(tm.dir, "admin", "key.pem"))
	if err != nil {
		tm.t.Fatal(err)
	}
	return c
}

// dialTLS connects to addr verifying the manager by the root; cert may be
// empty (no client certificate). Nodes' connections add the agents'
// transport options (dapi.Transport).
func dialTLS(t testing.TB, addr string, rootPEM []byte, cert tls.Certificate, extra ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cfg, err := pki.ClientTLSFromPEM(rootPEM, cert)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, append(extra, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// node is a test agent: a certificate got with a join token.
type node struct {
	id   string
	cert tls.Certificate
	root []byte
}

func joinNode(t testing.TB, addr, token, hostname string) node {
	t.Helper()
	n, err := joinNodeAs(t, addr, token, &types.NodeDescription{Hostname: hostname, Platform: &types.Platform{Os: "linux"}})
	if err != nil {
		t.Fatalf("join %s: %v", hostname, err)
	}
	return n
}

// joinNodes joins n nodes (hostnames n0, n1, ...), eight at a time: the
// benchmarks' thousands of simulated agents.
func joinNodes(t testing.TB, addr, token string, n int) []node {
	t.Helper()
	nodes := make([]node, n)
	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				nodes[i] = joinNode(t, addr, token, fmt.Sprintf("n%d", i))
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	return nodes
}

// joinNodeAs joins as agents join, with the description desc, and returns
// the CA's error.
func joinNodeAs(t testing.TB, addr, token string, desc *types.NodeDescription) (node, error) {
	t.Helper()
	joined, err := pki.Join(context.Background(), pki.JoinRequest{
		Addr: addr, Token: []byte(token), Role: types.NodeRole_NODE_ROLE_WORKER, Description: desc,
	})
	if err != nil {
		return node{}, err
	}
	return node{id: joined.NodeID, cert: joined.Cert, root: joined.RootPEM}, nil
}

// stream is an open dispatcher session of a test node.
type stream struct {
	t      testing.TB
	msgs   chan *dapi.SessionMessage
	errc   chan error
	cancel context.CancelFunc
}

func (n node) session(t testing.TB, addr string, resume uint64) *stream {
	t.Helper()
	return n.sessionAs(t, addr, resume, &types.NodeDescription{Hostname: "h"})
}

// sessionAs opens a session that describes the node as desc.
func (n node) sessionAs(t testing.TB, addr string, resume uint64, desc *types.NodeDescription) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// Dialled as an agent dials.
	cl := dapi.NewDispatcherClient(dialTLS(t, addr, n.root, n.cert, dapi.Transport{}.DialOptions()...))
	s := &stream{t: t, msgs: make(chan *dapi.SessionMessage, 64), errc: make(chan error, 1), cancel: cancel}
	ss, err := cl.Session(ctx, &dapi.SessionRequest{ResumeRevision: resume, Description: desc, Features: dapi.AgentFeatures()})
	if err != nil {
		s.errc <- err
		return s
	}
	go func() {
		for {
			m, err := ss.Recv()
			if err != nil {
				s.errc <- err
				return
			}
			s.msgs <- m
		}
	}()
	return s
}

func (s *stream) next() *dapi.SessionMessage {
	s.t.Helper()
	select {
	case m := <-s.msgs:
		return m
	case err := <-s.errc:
		s.t.Fatalf("stream ended: %v", err)
	case <-time.After(20 * time.Second):
		s.t.Fatal("no message in 20s")
	}
	return nil
}

// until reads messages until one satisfies ok.
func (s *stream) until(ok func(*dapi.SessionMessage) bool) *dapi.SessionMessage {
	s.t.Helper()
	for {
		if m := s.next(); ok(m) {
			return m
		}
	}
}

func (s *stream) ended() error {
	s.t.Helper()
	for {
		select {
		case <-s.msgs:
		case err := <-s.errc:
			return err
		case <-time.After(20 * time.Second):
			s.t.Fatal("stream did not end in 20s")
			return nil
		}
	}
}

// names lists "+kind:name" / "-kind:name" of a message.
func names(m *dapi.SessionMessage) map[string]bool {
	out := map[string]bool{}
	for _, c := range m.Changes {
		a := "+"
		if c.Action == dapi.AssignmentChange_REMOVE {
			a = "-"
		}
		switch it := c.Assignment.Item.(type) {
		case *dapi.Assignment_Secret:
			out[a+"secret:"+it.Secret.Name] = true
		case *dapi.Assignment_Service:
			out[a+"service:"+it.Service.ServiceName] = true
		}
	}
	return out
}

type jointokenToken = jointoken.Token

func parseToken(s string) (jointoken.Token, error) { return jointoken.Parse(s) }

func newTestCSR(t testing.TB) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), key
}
