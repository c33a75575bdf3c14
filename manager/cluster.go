package manager

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	clusterapi "github.com/lockbox-project/lockbox/api/cluster"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/etcd"
	"github.com/lockbox-project/lockbox/manager/keys"
	"github.com/lockbox-project/lockbox/pki"
)

// clusterServer serves Cluster.Join to managers (the interceptor checked
// the manager certificate).
type clusterServer struct {
	clusterapi.UnimplementedClusterServer
	m *Manager
}

func (s *clusterServer) Join(ctx context.Context, req *clusterapi.JoinRequest) (*clusterapi.JoinResponse, error) {
	who, err := pki.PeerIdentity(ctx)
	if err != nil || who.Role != pki.RoleManager {
		return nil, status.Error(codes.PermissionDenied, "joining needs a manager certificate")
	}
	resp := &clusterapi.JoinResponse{Autolock: s.m.st.Autolock, Managers: s.m.managerList()}
	switch {
	case s.m.member != nil && req.GetPeerUrl() == "":
		return nil, status.Error(codes.InvalidArgument, "this cluster runs embedded etcd: the joiner must give its peer URL")
	case s.m.member == nil && req.GetPeerUrl() != "":
		return nil, status.Error(codes.InvalidArgument, "this cluster uses external etcd: start the joiner with --etcd-endpoints")
	case s.m.member != nil:
		// Peers speak mutual TLS only: a plain-http member would let
		// anyone on the path read and forge raft traffic.
		if err := checkPeerURL(req.PeerUrl); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		initial, err := s.m.member.AddMember(ctx, who.NodeID, req.PeerUrl)
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
	who, err := pki.PeerIdentity(ctx)
	if err != nil || who.Role != pki.RoleManager {
		return nil, status.Error(codes.PermissionDenied, "promotion needs a manager certificate")
	}
	if s.m.member == nil {
		return &clusterapi.PromoteResponse{}, nil // external etcd: nothing to promote
	}
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		err := s.m.member.PromoteMember(ctx, who.NodeID, "")
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
	cfg, err := pki.ClientTLSFromPEM(rootPEM, own)
	if err != nil {
		return fmt.Errorf("manager: %s: %w", m.path("certs", "ca.crt"), err)
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
	registered, _, err := m.store.Managers(ctx, true)
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	// The manager joined through comes first: a fresh learner may not
	// have caught up with the registry yet.
	var addrs []string
	if m.cfg.JoinAddr != "" {
		addrs = append(addrs, m.cfg.JoinAddr)
	}
	for _, r := range registered {
		if r.NodeID != m.st.NodeID {
			addrs = append(addrs, r.Addr)
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
	// The token is needed for the certificate only; nothing keeps it.
	defer clear(m.cfg.JoinToken)
	// The CSR names the addresses other managers and etcd peers will dial.
	req, err := m.ownCertRequest("joining")
	if err != nil {
		return err
	}
	joined, err := pki.Join(ctx, pki.JoinRequest{
		Addr: m.cfg.JoinAddr, Token: m.cfg.JoinToken, Role: types.NodeRole_NODE_ROLE_MANAGER,
		Description: describeSelf(), DNSNames: req.DNSNames, IPs: req.IPs,
	})
	clear(m.cfg.JoinToken)
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	// The key stays in memory until the cluster says whether it is sealed
	// on disk (autolock).
	defer clear(joined.KeyPEM)
	id, err := pki.IdentityFromCert(joined.Cert.Leaf)
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	m.st = &state{NodeID: joined.NodeID}
	if len(m.cfg.EtcdEndpoints) == 0 {
		if m.st.PeerURL, err = m.peerURL(); err != nil {
			return err
		}
	}

	conn, err := grpc.NewClient(m.cfg.JoinAddr, grpc.WithTransportCredentials(credentials.NewTLS(
		pki.ClientTLS(joined.Root, func() *tls.Certificate { return &joined.Cert }))))
	if err != nil {
		return fmt.Errorf("manager: dial %s: %w", m.cfg.JoinAddr, err)
	}
	defer conn.Close()
	jctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cluster, err := clusterapi.NewClusterClient(conn).Join(jctx, &clusterapi.JoinRequest{PeerUrl: m.st.PeerURL})
	if err != nil {
		return fmt.Errorf("manager: join %s: %w", m.cfg.JoinAddr, err)
	}
	m.st.Autolock, m.st.ClusterID, m.st.InitialCluster = cluster.Autolock, id.ClusterID, cluster.InitialCluster
	m.nodeKey = newNodeKey(m.cfg.DataDir, cluster.Autolock)
	var kek *keys.KEK
	if cluster.Autolock {
		// The key is sealed with the KEK before it reaches the disk: the
		// join waits for the cluster's unlock key. A wrong one shows at
		// the keyring; the right one then re-seals the file.
		m.log.Warn("autolock: joined; give this manager the cluster's unlock key with 'lockbox unlock' on its admin socket")
		if kek, err = m.awaitUnlock(ctx, func(k *keys.KEK) error { m.nodeKey.useKEK(k); return nil }); err != nil {
			return err
		}
		defer kek.Zero()
	}
	if err := m.nodeKey.store(joined.CertPEM, joined.KeyPEM, joined.RootPEM); err != nil {
		return err
	}
	if !cluster.Autolock {
		kek, err := keys.KEKFromBytes(cluster.KeyEncryptionKey)
		clear(cluster.KeyEncryptionKey)
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

// checkPeerURL accepts only an https URL with a host and port: the
// member's peer endpoint, where etcd requires the manager certificate.
func checkPeerURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Port() == "" || u.Hostname() == "" || u.User != nil || (u.Path != "" && u.Path != "/") {
		return fmt.Errorf("peer URL %q: want https://HOST:PORT (etcd peers speak mutual TLS only)", raw)
	}
	return nil
}
