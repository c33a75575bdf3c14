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
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	caapi "github.com/lockbox-project/lockbox/api/ca"
	clusterapi "github.com/lockbox-project/lockbox/api/cluster"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/ca"
	"github.com/lockbox-project/lockbox/manager/ca/jointoken"
	"github.com/lockbox-project/lockbox/manager/etcd"
	"github.com/lockbox-project/lockbox/manager/keys"
)

// clusterServer serves Cluster.Join to managers (the interceptor checked
// the manager certificate).
type clusterServer struct {
	clusterapi.UnimplementedClusterServer
	m *Manager
}

func (s *clusterServer) Join(ctx context.Context, req *clusterapi.JoinRequest) (*clusterapi.JoinResponse, error) {
	who, err := ca.PeerIdentity(ctx)
	if err != nil || who.Role != ca.RoleManager {
		return nil, status.Error(codes.PermissionDenied, "joining needs a manager certificate")
	}
	resp := &clusterapi.JoinResponse{Autolock: s.m.st.Autolock, Managers: s.m.managerList()}
	switch {
	case s.m.member != nil && req.GetPeerUrl() == "":
		return nil, status.Error(codes.InvalidArgument, "this cluster runs embedded etcd: the joiner must give its peer URL")
	case s.m.member == nil && req.GetPeerUrl() != "":
		return nil, status.Error(codes.InvalidArgument, "this cluster uses external etcd: start the joiner with --etcd-endpoints")
	case s.m.member != nil:
		initial, err := addMember(ctx, s.m.cli, who.NodeID, req.PeerUrl)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "%v", err)
		}
		resp.InitialCluster = initial
	}
	if !s.m.st.Autolock {
		kek, err := keys.LoadKeyFile(s.m.path("kek"))
		if err != nil {
			return nil, status.Errorf(codes.Internal, "load key file: %v", err)
		}
		resp.KeyEncryptionKey = kek.Bytes()
		kek.Zero()
	}
	s.m.log.Info("manager joining", "node", who.NodeID, "peer_url", req.GetPeerUrl())
	return resp, nil
}

// Promote makes the caller's learner a voting member once it is in sync.
func (s *clusterServer) Promote(ctx context.Context, _ *clusterapi.PromoteRequest) (*clusterapi.PromoteResponse, error) {
	who, err := ca.PeerIdentity(ctx)
	if err != nil || who.Role != ca.RoleManager {
		return nil, status.Error(codes.PermissionDenied, "promotion needs a manager certificate")
	}
	if s.m.member == nil {
		return &clusterapi.PromoteResponse{}, nil // external etcd: nothing to promote
	}
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		err := etcd.PromoteMember(ctx, s.m.cli, who.NodeID, "")
		if err == nil {
			s.m.log.Info("manager promoted to a voting etcd member", "node", who.NodeID)
			return &clusterapi.PromoteResponse{}, nil
		}
		if !errors.Is(err, etcd.ErrLearnerNotReady) {
			return nil, status.Errorf(codes.Unavailable, "%v", err)
		}
		select {
		case <-ctx.Done():
			return nil, status.Errorf(codes.DeadlineExceeded, "learner %s did not catch up: %v", who.NodeID, err)
		case <-t.C:
		}
	}
}

// promote asks the manager at addr to make this manager's learner a voter.
func (m *Manager) promote(ctx context.Context, addr string) error {
	own, err := m.nodeKey.pair()
	if err != nil {
		return err
	}
	rootPEM, err := os.ReadFile(m.path(certsDir, rootCertFile))
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	cfg, err := ca.ClientTLS(rootPEM, own)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return fmt.Errorf("manager: dial %s: %w", addr, err)
	}
	defer conn.Close()
	pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := clusterapi.NewClusterClient(conn).Promote(pctx, &clusterapi.PromoteRequest{}); err != nil {
		return fmt.Errorf("manager: promotion by %s: %w", addr, err)
	}
	// The leader has committed the promotion; this member serves as a
	// voter once it has applied it too.
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for m.member.IsLearner() {
		select {
		case <-pctx.Done():
			return fmt.Errorf("manager: promoted, but this member did not apply it: %w", pctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// promoteSelf finishes a join that stopped between starting the learner
// and its promotion: any other manager can promote it.
func (m *Manager) promoteSelf(ctx context.Context) error {
	// A learner serves serializable reads: the registry is readable.
	resp, err := m.cli.Get(ctx, managersPrefix, clientv3.WithPrefix(), clientv3.WithSerializable())
	if err != nil {
		return fmt.Errorf("manager: read managers: %w", err)
	}
	// The manager joined through comes first: a fresh learner may not
	// have caught up with the registry yet.
	var addrs []string
	if m.cfg.JoinAddr != "" {
		addrs = append(addrs, m.cfg.JoinAddr)
	}
	for _, kv := range resp.Kvs {
		if strings.TrimPrefix(string(kv.Key), managersPrefix) != m.st.NodeID {
			addrs = append(addrs, string(kv.Value))
		}
	}
	var last error = errors.New("no other manager is registered")
	for _, addr := range addrs {
		if last = m.promote(ctx, addr); last == nil {
			return nil
		}
	}
	return fmt.Errorf("manager: this etcd member is still a learner and no manager promoted it: %w", last)
}

// join is the first start of a manager joining a cluster: get a manager
// certificate with the token, become an etcd member, receive the KEK.
func (m *Manager) join(ctx context.Context) error {
	tok, err := jointoken.Parse(m.cfg.JoinToken)
	if err != nil {
		return fmt.Errorf("manager: --token: %w", err)
	}
	rootPEM, err := fetchPinnedRoot(ctx, m.cfg.JoinAddr, tok)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	// The CSR's subject is ignored by the CA; the addresses are what other
	// managers and etcd peers will dial.
	req, err := m.ownCertRequest("joining")
	if err != nil {
		return err
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "joining-manager"}, IPAddresses: req.IPs, DNSNames: req.DNSNames,
	}, key)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(rootPEM)
	conn, err := grpc.NewClient(m.cfg.JoinAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: ca.ManagerDNSName,
	})))
	if err != nil {
		return fmt.Errorf("manager: dial %s: %w", m.cfg.JoinAddr, err)
	}
	issued, err := caapi.NewNodeCAClient(conn).IssueNodeCertificate(ctx, &caapi.IssueNodeCertificateRequest{
		Token:       m.cfg.JoinToken,
		CsrPem:      pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}),
		Description: describeSelf(),
	})
	conn.Close()
	if st, ok := status.FromError(err); ok && st.Code() == codes.FailedPrecondition {
		// The CA refused before recording anything (a worker token):
		// its message says what to do.
		return fmt.Errorf("manager: join %s: %s", m.cfg.JoinAddr, st.Message())
	}
	if err != nil {
		return fmt.Errorf("manager: join %s: %w", m.cfg.JoinAddr, err)
	}
	// A CA that signs without checking the request's addresses (older
	// managers) is caught here, with a worker node already recorded.
	if issued.Role != types.NodeRole_NODE_ROLE_MANAGER {
		return errors.New("manager: the token is a worker token: join managers with 'lockbox join-token manager'")
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	clear(keyDER)
	// The key stays in memory until the cluster says whether it is sealed
	// on disk (autolock).
	defer clear(keyPEM)
	m.st = &state{NodeID: issued.NodeId}
	if len(m.cfg.EtcdEndpoints) == 0 {
		if m.st.PeerURL, err = m.peerURL(); err != nil {
			return err
		}
	}

	own, err := tls.X509KeyPair(issued.CertificatePem, keyPEM)
	if err != nil {
		return fmt.Errorf("manager: issued certificate: %w", err)
	}
	cfg, err := ca.ClientTLS(rootPEM, own)
	if err != nil {
		return err
	}
	conn, err = grpc.NewClient(m.cfg.JoinAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return fmt.Errorf("manager: dial %s: %w", m.cfg.JoinAddr, err)
	}
	defer conn.Close()
	jctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	joined, err := clusterapi.NewClusterClient(conn).Join(jctx, &clusterapi.JoinRequest{PeerUrl: m.st.PeerURL})
	if err != nil {
		return fmt.Errorf("manager: join %s: %w", m.cfg.JoinAddr, err)
	}
	id, err := ca.IdentityFromCert(own.Leaf)
	if err != nil {
		return err
	}
	m.st.Autolock, m.st.ClusterID, m.st.InitialCluster = joined.Autolock, id.ClusterID, joined.InitialCluster
	m.nodeKey = newNodeKey(m.cfg.DataDir, joined.Autolock)
	var kek *keys.KEK
	if joined.Autolock {
		// The key is sealed with the KEK before it reaches the disk: the
		// join waits for the cluster's unlock key. A wrong one shows at
		// the keyring; the right one then re-seals the file.
		m.log.Warn("autolock: joined; give this manager the cluster's unlock key with 'lockbox unlock' on its admin socket")
		if kek, err = m.awaitUnlock(ctx, func(k *keys.KEK) error { m.nodeKey.useKEK(k); return nil }); err != nil {
			return err
		}
		defer kek.Zero()
	}
	if err := m.nodeKey.store(issued.CertificatePem, keyPEM, rootPEM); err != nil {
		return err
	}
	if !joined.Autolock {
		kek, err := keys.KEKFromBytes(joined.KeyEncryptionKey)
		clear(joined.KeyEncryptionKey)
		if err != nil {
			return fmt.Errorf("manager: key-encryption key from %s: %w", m.cfg.JoinAddr, err)
		}
		err = keys.WriteKeyFile(m.path("kek"), kek)
		kek.Zero()
		if err != nil {
			return err
		}
	}
	// From here on the join is this data dir's: a crash below is finished
	// by the next start (restart), never redone with a new identity.
	if err := m.saveState(m.st); err != nil {
		return err
	}
	if err := m.restart(ctx, kek); err != nil {
		return err
	}
	m.log.Info("joined cluster", "cluster", m.st.ClusterID, "node", m.st.NodeID, "via", m.cfg.JoinAddr)
	return nil
}

// fetchPinnedRoot gets the root CA without trusting the server, and
// accepts it only if its digest is the one in the token.
func fetchPinnedRoot(ctx context.Context, addr string, tok jointoken.Token) ([]byte, error) {
	// Nothing is trusted from this connection until the digest matches.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, //nolint:gosec // pinned below
	})))
	if err != nil {
		return nil, fmt.Errorf("manager: dial %s: %w", addr, err)
	}
	defer conn.Close()
	resp, err := caapi.NewNodeCAClient(conn).GetRootCACertificate(ctx, &caapi.GetRootCACertificateRequest{})
	if err != nil {
		return nil, fmt.Errorf("manager: fetch root CA from %s: %w", addr, err)
	}
	b, _ := pem.Decode(resp.CertificatePem)
	if b == nil || !tok.PinsCA(b.Bytes) {
		return nil, fmt.Errorf("manager: the root CA of %s does not match the token's digest: wrong cluster or an impostor", addr)
	}
	return resp.CertificatePem, nil
}

// addMember retries while etcd calls the cluster unhealthy: it refuses a
// new member until the last one to join has been up for a few seconds,
// which is what happens when managers join one right after the other.
func addMember(ctx context.Context, cli *clientv3.Client, name, peerURL string) (string, error) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		initial, err := etcd.AddMember(ctx, cli, name, peerURL)
		if err == nil || !retryableAdd(err) {
			return initial, err
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w (gave up: %v)", err, ctx.Err())
		case <-t.C:
		}
	}
}

// retryableAdd: etcd calls the cluster unhealthy right after a member
// joined, and allows one learner at a time; both pass.
func retryableAdd(err error) bool {
	return errors.Is(err, rpctypes.ErrUnhealthy) ||
		strings.Contains(err.Error(), rpctypes.ErrUnhealthy.Error()) ||
		strings.Contains(err.Error(), "too many learner")
}
