//go:build linux

package manager

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	caapi "github.com/lockbox-project/lockbox/api/ca"
	clusterapi "github.com/lockbox-project/lockbox/api/cluster"
	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/admin"
	"github.com/lockbox-project/lockbox/manager/etcd/etcdtest"
	"github.com/lockbox-project/lockbox/manager/store"
	"github.com/lockbox-project/lockbox/pki"
)

func TestMain(m *testing.M) {
	// Child mode: a non-root process dialling the admin socket.
	if sock := os.Getenv("LOCKBOX_TEST_DIAL_AS_NOBODY"); sock != "" {
		os.Exit(dialAdminSocket(sock))
	}
	if os.Getenv("LOCKBOX_TEST_RUN_MANAGER") != "" {
		os.Exit(runManagerChild())
	}
	os.Exit(m.Run())
}

func dialAdminSocket(sock string) int {
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 3
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := adminapi.NewAdminClient(conn).ListSecrets(ctx, &adminapi.ListSecretsRequest{}); err != nil {
		return 1 // refused, as it must be
	}
	return 0
}

func createSecret(t testing.TB, a adminapi.AdminClient, name, data string) *types.Secret {
	t.Helper()
	r, err := a.CreateSecret(context.Background(), &adminapi.CreateSecretRequest{Spec: &types.SecretSpec{Name: name}, Data: []byte(data)})
	if err != nil {
		t.Fatal(err)
	}
	return r.Secret
}

func createService(t testing.TB, a adminapi.AdminClient, name string, constraints []string, secrets ...*types.Secret) *types.Service {
	t.Helper()
	spec := &types.ServiceSpec{Name: name, Placement: &types.Placement{Constraints: constraints}}
	for _, s := range secrets {
		spec.Secrets = append(spec.Secrets, &types.SecretReference{SecretId: s.Id, SecretName: s.Spec.Name, Target: &types.FileTarget{Name: s.Spec.Name}})
	}
	r, err := a.CreateService(context.Background(), &adminapi.CreateServiceRequest{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	return r.Service
}

func token(t testing.TB, a adminapi.AdminClient, role types.NodeRole, rotate bool) string {
	t.Helper()
	r, err := a.GetJoinToken(context.Background(), &adminapi.GetJoinTokenRequest{Role: role, Rotate: rotate})
	if err != nil {
		t.Fatal(err)
	}
	return r.Token
}

func TestAuthorization(t *testing.T) {
	ctx := context.Background()
	m := startManager(t, testConfig(t, "127.0.0.1"))
	adm := m.admin()
	addr := m.Addr()
	root := m.rootPEM()

	// Files written at init are root-only.
	for _, p := range []string{"state.json", "kek", "certs/node.key", "admin/key.pem", "admin/cert.pem", "admin/ca.pem"} {
		fi, err := os.Stat(filepath.Join(m.dir, p))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v", p, fi.Mode(), err)
		}
	}
	for _, p := range []string{m.dir, filepath.Dir(m.sock)} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, %v", p, fi.Mode(), err)
		}
	}

	wtok := token(t, adm, types.NodeRole_NODE_ROLE_WORKER, false)
	a := joinNode(t, addr, wtok, "a")
	b := joinNode(t, addr, wtok, "b")
	s1 := createSecret(t, adm, "only-a", "secret-of-a")
	s2 := createSecret(t, adm, "everyone", "shared")
	createService(t, adm, "svc-a", []string{"node.id==" + a.id}, s1)
	createService(t, adm, "svc-all", nil, s2)

	// Admin over TCP: admin certificate yes; node certificate, no
	// certificate: no.
	tcpAdmin := func(cert tls.Certificate) error {
		_, err := adminapi.NewAdminClient(dialTLS(t, addr, root, cert)).ListSecrets(ctx, &adminapi.ListSecretsRequest{})
		return err
	}
	if err := tcpAdmin(m.adminCert()); err != nil {
		t.Fatalf("admin certificate refused: %v", err)
	}
	if err := tcpAdmin(a.cert); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("node certificate on Admin: %v", err)
	}
	if err := tcpAdmin(tls.Certificate{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no certificate on Admin: %v", err)
	}
	// The audit log is an admin read: a node certificate cannot read it.
	// Writes on the socket are local root's, over TCP the certificate's.
	tcpAdminClient := adminapi.NewAdminClient(dialTLS(t, addr, root, m.adminCert()))
	if _, err := adminapi.NewAdminClient(dialTLS(t, addr, root, a.cert)).ListAudit(ctx, &adminapi.ListAuditRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("node certificate on ListAudit: %v", err)
	}
	if _, err := tcpAdminClient.CreateSecret(ctx, &adminapi.CreateSecretRequest{Spec: &types.SecretSpec{Name: "over-tcp"}, Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	log, err := tcpAdminClient.ListAudit(ctx, &adminapi.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	actors := map[string]string{}
	for _, e := range log.Entries {
		if e.Action == store.AuditSecretCreate {
			actors[e.ObjectName] = e.Actor
		}
	}
	if actors["only-a"] != store.AuditActorLocalRoot || !strings.HasPrefix(actors["over-tcp"], admin.AdminIDPrefix) {
		t.Fatalf("secret.create actors %v: want local root on the socket, the admin certificate over TCP", actors)
	}
	// Cluster API: managers only.
	if _, err := clusterapi.NewClusterClient(dialTLS(t, addr, root, a.cert)).Join(ctx, &clusterapi.JoinRequest{PeerUrl: "https://127.0.0.1:1"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("worker on Cluster.Join: %v", err)
	}
	// Dispatcher: an admin certificate is not a node.
	if _, err := dapi.NewDispatcherClient(dialTLS(t, addr, root, m.adminCert())).Heartbeat(ctx, &dapi.HeartbeatRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("admin on Dispatcher: %v", err)
	}

	// Each node's stream carries its own grants only.
	sa, sb := a.session(t, addr, 0), b.session(t, addr, 0)
	ma := sa.until(func(m *dapi.SessionMessage) bool { return names(m)["+service:svc-a"] && names(m)["+service:svc-all"] })
	if ma.NodeId != a.id {
		t.Fatalf("a's stream names node %s", ma.NodeId)
	}
	mb := sb.until(func(m *dapi.SessionMessage) bool { return names(m)["+service:svc-all"] })
	if mb.NodeId != b.id || names(mb)["+service:svc-a"] || names(mb)["+secret:only-a"] {
		t.Fatalf("b's stream carries %v for node %s", names(mb), mb.NodeId)
	}
	if _, err := dapi.NewDispatcherClient(dialTLS(t, addr, b.root, b.cert)).Heartbeat(ctx, &dapi.HeartbeatRequest{}); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}

	// Renewal: same node, new certificate, recorded on the node.
	csr, _ := newTestCSR(t)
	renewed, err := caapi.NewNodeCAClient(dialTLS(t, addr, a.root, a.cert)).RenewNodeCertificate(ctx, &caapi.RenewNodeCertificateRequest{CsrPem: csr})
	if err != nil || renewed.NodeId != a.id {
		t.Fatalf("renew: %v %v", renewed, err)
	}
	newLeaf, _ := parsePEMCert(renewed.CertificatePem)
	got, err := adm.GetNode(ctx, &adminapi.GetNodeRequest{NameOrId: a.id})
	if err != nil || got.Node.Certificate.GetSerial() != newLeaf.SerialNumber.Text(16) {
		t.Fatalf("node record after renewal: %v %v", got, err)
	}

	// Revocation: b's open stream ends, and b is refused from then on.
	if _, err := adm.RemoveNode(ctx, &adminapi.RemoveNodeRequest{NameOrId: b.id, Force: true}); err != nil {
		t.Fatal(err)
	}
	if err := sb.ended(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("revoked node's stream ended with %v", err)
	}
	if _, err := dapi.NewDispatcherClient(dialTLS(t, addr, b.root, b.cert)).Heartbeat(ctx, &dapi.HeartbeatRequest{}); err == nil {
		t.Fatal("revoked node's heartbeat accepted")
	}
	// a is unaffected.
	if _, err := dapi.NewDispatcherClient(dialTLS(t, addr, a.root, a.cert)).Heartbeat(ctx, &dapi.HeartbeatRequest{}); err != nil {
		t.Fatalf("a refused after b's revocation: %v", err)
	}

	// A rotated token is refused.
	newTok := token(t, adm, types.NodeRole_NODE_ROLE_WORKER, true)
	if newTok == wtok {
		t.Fatal("rotation kept the token")
	}
	if _, _, err := pki.FetchPinnedRoot(ctx, addr, mustParse(t, wtok)); err != nil {
		t.Fatal(err) // same CA: pinning still works
	}
	joinNode(t, addr, newTok, "c")

	// The admin socket refuses a non-root caller (SO_PEERCRED), even when
	// file permissions would let it in.
	if err := os.Chmod(filepath.Dir(m.sock), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(m.sock, 0o666); err != nil {
		t.Fatal(err)
	}
	// The test binary sits in a directory only root can enter: run a copy.
	bin := copyExecutable(t)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "LOCKBOX_TEST_DIAL_AS_NOBODY="+m.sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("nobody on the admin socket: %v", err)
	}
}

func TestAutolock(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, "127.0.0.1")
	cfg.Autolock = true
	m := startManager(t, cfg)
	key := regexp.MustCompile(`LBXKEY-1-\S+`).FindString(m.out.String())
	if key == "" {
		t.Fatalf("no unlock key printed: %q", m.out.String())
	}
	createSecret(t, m.admin(), "s", "data")
	m.stop()

	// Restarted: locked until unlocked. Its key files are sealed, so it
	// neither starts etcd nor listens on TCP: the admin socket serves
	// Unlock and nothing else (TCP unlock, possible before, is gone).
	cfg.ListenAddr = m.Addr()
	cfg.MetricsAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1"))
	m = startManager(t, cfg)
	if m.Addr() != "" || m.store != nil {
		t.Fatalf("locked manager listens on %q / runs etcd", m.Addr())
	}
	if v := value(scrape(t, cfg.MetricsAddr), "lockbox_manager_locked"); v != 1 {
		t.Errorf("lockbox_manager_locked = %v while locked", v)
	}
	if c, err := net.DialTimeout("tcp", cfg.ListenAddr, 2*time.Second); err == nil {
		c.Close()
		t.Fatal("locked manager accepts TCP connections")
	}
	adm := m.admin()
	if _, err := adm.ListSecrets(ctx, &adminapi.ListSecretsRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("locked manager served ListSecrets: %v", err)
	}
	if _, err := adm.GetUnlockKey(ctx, &adminapi.GetUnlockKeyRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("locked manager served GetUnlockKey: %v", err)
	}
	if _, err := adm.Unlock(ctx, &adminapi.UnlockRequest{UnlockKey: strings.Replace(key, "LBXKEY-1-", "LBXKEY-1-x", 1)}); err == nil {
		t.Fatal("wrong unlock key accepted")
	}
	if _, err := adm.Unlock(ctx, &adminapi.UnlockRequest{UnlockKey: key}); err != nil {
		t.Fatal(err)
	}
	r, err := adm.ListSecrets(ctx, &adminapi.ListSecretsRequest{})
	if err != nil || len(r.Secrets) != 1 {
		t.Fatalf("after unlock: %v %v", r, err)
	}
	if v := value(scrape(t, cfg.MetricsAddr), "lockbox_manager_locked"); v != 0 {
		t.Errorf("lockbox_manager_locked = %v once unlocked", v)
	}
	// Issuing needs the CA key, sealed by the data key: works once unlocked.
	joinNode(t, m.Addr(), token(t, adm, types.NodeRole_NODE_ROLE_WORKER, false), "n")
}

func TestJoinAndFanOutAcrossManagers(t *testing.T) {
	ctx := context.Background()
	m1 := startManager(t, testConfig(t, "127.0.0.1"))
	adm := m1.admin()
	cfg2 := testConfig(t, "127.0.0.2")
	cfg2.JoinAddr = m1.Addr()
	cfg2.JoinToken = []byte(token(t, adm, types.NodeRole_NODE_ROLE_WORKER, false))
	if _, err := New(cfg2); err != nil {
		t.Fatal(err)
	}
	// A worker token does not make a manager.
	bad, _ := New(cfg2)
	bctx, bcancel := context.WithTimeout(ctx, 30*time.Second)
	defer bcancel()
	if err := bad.Run(bctx); err == nil || !strings.Contains(err.Error(), "worker token") {
		t.Fatalf("joined as manager with a worker token: %v", err)
	}
	// ... and the refused join left no node behind.
	if r, err := adm.ListNodes(ctx, &adminapi.ListNodesRequest{}); err != nil || len(r.Nodes) != 1 {
		t.Fatalf("nodes after a refused manager join: %v (%v)", r.GetNodes(), err)
	}

	cfg2 = testConfig(t, "127.0.0.2")
	cfg2.JoinAddr = m1.Addr()
	cfg2.JoinToken = []byte(token(t, adm, types.NodeRole_NODE_ROLE_MANAGER, false))
	m2 := startManager(t, cfg2)

	// The node talks to manager 2; the change is written through manager 1.
	n := joinNode(t, m2.Addr(), token(t, m2.admin(), types.NodeRole_NODE_ROLE_WORKER, false), "n")
	s := n.session(t, m2.Addr(), 0)
	first := s.next()
	if first.Type != dapi.SessionMessage_COMPLETE || len(first.Managers) != 2 {
		t.Fatalf("first message %v with managers %v", first.Type, first.Managers)
	}
	// Join tokens come with the managers to join, as agents are told them.
	jt, err := m2.admin().GetJoinToken(ctx, &adminapi.GetJoinTokenRequest{Role: types.NodeRole_NODE_ROLE_WORKER})
	if err != nil || !slices.Equal(jt.Managers, first.Managers) {
		t.Fatalf("join token managers %v (%v), session managers %v", jt.GetManagers(), err, first.Managers)
	}
	sec := createSecret(t, adm, "via-m1", "payload")
	createService(t, adm, "svc", nil, sec)
	m := s.until(func(m *dapi.SessionMessage) bool { return names(m)["+service:svc"] })
	if m.Type != dapi.SessionMessage_INCREMENTAL {
		t.Fatalf("change arrived as %v", m.Type)
	}
	found := false
	for _, c := range m.Changes {
		if sd := c.Assignment.GetSecret(); sd != nil && sd.Name == "via-m1" && string(sd.Data) == "payload" {
			found = true
		}
	}
	if !found {
		t.Fatalf("secret data missing from %v", names(m))
	}
	// Manager 2 sees every node: two managers and the worker (the
	// refused manager join registered none).
	r, err := m2.admin().ListNodes(ctx, &adminapi.ListNodesRequest{})
	if err != nil || len(r.Nodes) != 3 {
		t.Fatalf("nodes on m2: %v %v", r, err)
	}

	// Revoked through manager 1: the stream on manager 2 ends, and
	// manager 2 refuses the node from then on.
	if _, err := adm.RemoveNode(ctx, &adminapi.RemoveNodeRequest{NameOrId: n.id, Force: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.ended(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("stream on manager 2 ended with %v", err)
	}
	if _, err := dapi.NewDispatcherClient(dialTLS(t, m2.Addr(), n.root, n.cert)).Heartbeat(ctx, &dapi.HeartbeatRequest{}); err == nil {
		t.Fatal("manager 2 accepted a node revoked through manager 1")
	}
}

func mustParse(t testing.TB, s string) jointokenToken {
	t.Helper()
	tok, err := parseToken(s)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func copyExecutable(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "lockbox-test-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "manager.test")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestOwnCertificateRenewal(t *testing.T) {
	ctx := context.Background()
	m := startManager(t, testConfig(t, "127.0.0.1"))
	served := func() string {
		conn, err := tls.Dial("tcp", m.Addr(), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := served()
	// Not due yet: nothing changes.
	if err := m.renewOwnCert(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	if served() != before {
		t.Fatal("renewed a certificate that was not due")
	}
	// Two thirds of the way through its life: renewed, served at once,
	// written for etcd, and recorded on the node.
	if err := m.renewOwnCert(ctx, time.Now().Add(70*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	after := served()
	if after == before {
		t.Fatal("certificate not renewed")
	}
	onDisk, err := os.ReadFile(filepath.Join(m.dir, "certs", "node.crt"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := parsePEMCert(onDisk)
	if err != nil || leaf.SerialNumber.String() != after {
		t.Fatalf("file holds serial %v, served %s (%v)", leaf.SerialNumber, after, err)
	}
	r, err := m.admin().GetNode(ctx, &adminapi.GetNodeRequest{NameOrId: m.NodeID()})
	if err != nil || r.Node.Certificate.Serial != leaf.SerialNumber.Text(16) {
		t.Fatalf("node record: %v %v", r, err)
	}
	// The admin still reaches it over TCP with the renewed certificate.
	if _, err := adminapi.NewAdminClient(dialTLS(t, m.Addr(), m.rootPEM(), m.adminCert())).ListSecrets(ctx, &adminapi.ListSecretsRequest{}); err != nil {
		t.Fatal(err)
	}
}

func TestDataDirHoldsNoPlaintext(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, "127.0.0.1")
	m := startManager(t, cfg)
	adm := m.admin()
	marker := "PLAINTEXT-MARKER-7f3a9c"
	var markers []string
	for i := 0; i < 20; i++ {
		markers = append(markers, fmt.Sprintf("%s-%02d", marker, i))
		createSecret(t, adm, fmt.Sprintf("s%02d", i), markers[i]+strings.Repeat("x", i*100))
	}
	wtok, _ := parseToken(token(t, adm, types.NodeRole_NODE_ROLE_WORKER, false))
	mtok, _ := parseToken(token(t, adm, types.NodeRole_NODE_ROLE_MANAGER, false))
	// The data travels to a node too, so it is surely in every etcd path.
	n := joinNode(t, m.Addr(), token(t, adm, types.NodeRole_NODE_ROLE_WORKER, false), "n")
	sec, err := adm.ListSecrets(ctx, &adminapi.ListSecretsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	createService(t, adm, "svc", nil, sec.Secrets...)
	s := n.session(t, m.Addr(), 0)
	s.until(func(m *dapi.SessionMessage) bool { return names(m)["+service:svc"] })
	m.stop()

	needles := map[string][]byte{"secret marker": []byte(marker), "worker token secret": []byte(wtok.Secret), "manager token secret": []byte(mtok.Secret)}
	files := 0
	err = filepath.Walk(cfg.DataDir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		files++
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for what, needle := range needles {
			if bytes.Contains(b, needle) {
				t.Errorf("%s found in %s", what, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 5 {
		t.Fatalf("scanned only %d files", files)
	}
}

func TestExternalEtcd(t *testing.T) {
	ctx := context.Background()
	ext := etcdtest.Start(t)
	cfg1 := testConfig(t, "127.0.0.1")
	cfg1.EtcdEndpoints = []string{ext.Endpoint}
	m1 := startManager(t, cfg1)
	if _, err := os.Stat(filepath.Join(m1.dir, "etcd")); !os.IsNotExist(err) {
		t.Fatalf("an embedded member was started: %v", err)
	}
	createSecret(t, m1.admin(), "shared", "x")

	cfg2 := testConfig(t, "127.0.0.2")
	cfg2.EtcdEndpoints = []string{ext.Endpoint}
	cfg2.JoinAddr = m1.Addr()
	cfg2.JoinToken = []byte(token(t, m1.admin(), types.NodeRole_NODE_ROLE_MANAGER, false))
	m2 := startManager(t, cfg2)
	r, err := m2.admin().ListSecrets(ctx, &adminapi.ListSecretsRequest{})
	if err != nil || len(r.Secrets) != 1 || r.Secrets[0].Spec.Name != "shared" {
		t.Fatalf("second manager on the same external etcd sees %v, %v", r, err)
	}
	// Both are unlocked with the same key-encryption key.
	createSecret(t, m2.admin(), "from-m2", "y")
	nodes, err := m1.admin().ListNodes(ctx, &adminapi.ListNodesRequest{})
	if err != nil || len(nodes.Nodes) != 2 {
		t.Fatalf("nodes: %v %v", nodes, err)
	}
	for _, n := range nodes.Nodes {
		if n.State != types.NodeState_NODE_STATE_READY || n.Addr == "" {
			t.Errorf("manager node %s: state %v addr %q", n.Id, n.State, n.Addr)
		}
	}
}

// A manager killed after its etcd member started as a learner, before its
// promotion, finishes the join on its next start: same identity, promoted,
// serving.
func TestInterruptedJoinFinishesOnRestart(t *testing.T) {
	ctx := context.Background()
	m1 := startManager(t, testConfig(t, "127.0.0.1"))
	cfg2 := testConfig(t, "127.0.0.2")
	cfg2.JoinAddr = m1.Addr()
	cfg2.JoinToken = []byte(token(t, m1.admin(), types.NodeRole_NODE_ROLE_MANAGER, false))
	m2, err := New(cfg2)
	if err != nil {
		t.Fatal(err)
	}
	errCrash := errors.New("simulated crash")
	m2.testHookLearner = func() error { return errCrash }
	if err := m2.Run(ctx); !errors.Is(err, errCrash) {
		t.Fatalf("interrupted join: %v", err)
	}
	// The cluster keeps its quorum with the learner down.
	createSecret(t, m1.admin(), "during", "x")

	// Without --join now (a restart), the same identity comes back.
	st, _ := (&Manager{cfg: cfg2}).loadState()
	if st == nil || st.NodeID == "" {
		t.Fatal("no state saved by the interrupted join")
	}
	cfg2.ListenAddr = "127.0.0.2:0"
	again := startManager(t, cfg2)
	if again.NodeID() != st.NodeID || again.member.IsLearner() {
		t.Fatalf("restarted as %s (learner %v), joined as %s", again.NodeID(), again.member.IsLearner(), st.NodeID)
	}
	r, err := again.admin().ListSecrets(ctx, &adminapi.ListSecretsRequest{})
	if err != nil || len(r.Secrets) != 1 {
		t.Fatalf("secrets on the finished joiner: %v %v", r, err)
	}
}

// Rotating the data key re-seals the CA's key and join tokens too: a
// manager started after the rotation still issues certificates.
func TestDataKeyRotationKeepsCAUsable(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, "127.0.0.1")
	m := startManager(t, cfg)
	createSecret(t, m.admin(), "s", "x")
	r, err := m.admin().RotateDataKey(ctx, &adminapi.RotateDataKeyRequest{})
	if err != nil || r.Resealed < 3 { // the secret, the CA key, the tokens
		t.Fatalf("rotate: %v %v", r, err)
	}
	m.stop()
	cfg.ListenAddr = m.Addr()
	m = startManager(t, cfg)
	joinNode(t, m.Addr(), token(t, m.admin(), types.NodeRole_NODE_ROLE_WORKER, false), "after-rotation")
}

// etcd's peer port takes manager certificates only: a worker holding a
// certificate of the same CA cannot speak raft or read the member list.
func TestEtcdPeersNeedManagerCertificate(t *testing.T) {
	m := startManager(t, testConfig(t, "127.0.0.1"))
	peer := "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(m.cfg.EtcdPeerPort)) + "/members"
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(m.rootPEM())
	get := func(cert tls.Certificate) error {
		cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
		}}}
		resp, err := cl.Get(peer)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %s", resp.Status)
		}
		return nil
	}
	own, err := tls.LoadX509KeyPair(filepath.Join(m.dir, "certs", "node.crt"), filepath.Join(m.dir, "certs", "node.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := get(own); err != nil {
		t.Fatalf("manager certificate refused by the peer port: %v", err)
	}
	w := joinNode(t, m.Addr(), token(t, m.admin(), types.NodeRole_NODE_ROLE_WORKER, false), "w")
	if err := get(w.cert); err == nil {
		t.Fatal("worker certificate accepted by the etcd peer port")
	}
	if err := get(m.adminCert()); err == nil {
		t.Fatal("admin certificate accepted by the etcd peer port")
	}
	if err := get(tls.Certificate{}); err == nil {
		t.Fatal("no certificate accepted by the etcd peer port")
	}
}
