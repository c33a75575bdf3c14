package etcd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/lockbox-project/lockbox/internal/sockdiag"
	"github.com/lockbox-project/lockbox/pki"
)

// TLSFiles names PEM files for mutual TLS.
type TLSFiles struct {
	CertFile, KeyFile, CAFile string
	// CRLFile (DER) is read at every connection the peer port accepts;
	// a certificate whose serial it lists is refused. It must exist
	// whenever the member runs: etcd refuses every peer without it.
	// Replace it atomically (rename), never in place.
	CRLFile string
}

func (f *TLSFiles) empty() bool { return f == nil || f.CertFile == "" }

// Config describes the member to start.
type Config struct {
	// Dir holds the member's files; created 0700.
	Dir string
	// Name is the member name, unique in the cluster (the manager's node ID).
	Name string
	// PeerURL is where other members reach this one, e.g.
	// "https://10.0.0.1:4243". It is also the listen address.
	PeerURL string
	// PeerTLS, when set, makes the peer endpoint require mutual TLS.
	PeerTLS *TLSFiles
	// InitialCluster is "name=peerURL,..." including this member, for a
	// member joining an existing cluster; empty starts a new cluster of one.
	// It is ignored once the member has data: etcd restarts from its WAL.
	InitialCluster string
	// StartTimeout bounds the wait for the member to be ready (default 60s).
	StartTimeout time.Duration
	// Logger receives etcd's own logs; nil discards them.
	Logger *zap.Logger
}

// Member is a running embedded etcd member and a client connected to it.
type Member struct {
	etcd   *embed.Etcd
	client *clientv3.Client
	// Endpoint is the member's client endpoint (a unix socket URL).
	Endpoint string

	closeOnce sync.Once
	closeErr  error
}

// ClientSocket returns the client socket path of a member kept in dir.
func ClientSocket(dir string) string { return filepath.Join(dir, "client.sock") }

// HasData reports whether dir already holds a member's data, in which case
// Start restarts that member whatever InitialCluster says.
func HasData(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "member", "wal"))
	return err == nil
}

// Start starts the member and waits until it serves. The caller must Close it.
func Start(ctx context.Context, cfg Config) (*Member, error) {
	if cfg.Dir == "" || cfg.Name == "" || cfg.PeerURL == "" {
		return nil, errors.New("etcd: Dir, Name and PeerURL are required")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcd: create %s: %w", cfg.Dir, err)
	}
	// MkdirAll leaves an existing directory's mode alone; the client socket
	// must not be reachable by anyone but root.
	if err := os.Chmod(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcd: chmod %s: %w", cfg.Dir, err)
	}
	peer, err := url.Parse(cfg.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("etcd: peer URL %q: %w", cfg.PeerURL, err)
	}
	sock := ClientSocket(cfg.Dir)
	// A socket left by a killed member would make the listen fail.
	_ = os.Remove(sock)
	client := url.URL{Scheme: "unix", Path: sock}

	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.Dir
	ec.ListenPeerUrls = []url.URL{*peer}
	ec.AdvertisePeerUrls = []url.URL{*peer}
	ec.ListenClientUrls = []url.URL{client}
	ec.AdvertiseClientUrls = []url.URL{client}
	logger := cfg.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(logger)
	// Keep history for resuming dispatcher streams, but bounded.
	ec.AutoCompactionMode = embed.CompactorModeRevision
	ec.AutoCompactionRetention = "100000"
	ec.InitialClusterToken = "lockbox"
	if !cfg.PeerTLS.empty() {
		ec.PeerTLSInfo = transport.TLSInfo{
			CertFile:         cfg.PeerTLS.CertFile,
			KeyFile:          cfg.PeerTLS.KeyFile,
			TrustedCAFile:    cfg.PeerTLS.CAFile,
			ClientCertAuth:   true,
			AllowedHostnames: []string{pki.ManagerDNSName},
			// A peer is authenticated by the CA and the manager name,
			// not by the source address, which differs from the
			// advertised one on multi-homed hosts (and on 127.0.0.x).
			SkipClientSANVerify: true,
			// Removed managers: their certificates are still signed
			// by the CA and name the manager host.
			CRLFile: cfg.PeerTLS.CRLFile,
		}
	}
	if cfg.InitialCluster != "" && !HasData(cfg.Dir) {
		ec.InitialCluster = cfg.InitialCluster
		ec.ClusterState = embed.ClusterStateFlagExisting
	} else {
		ec.InitialCluster = ec.InitialClusterFromName(cfg.Name)
	}

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("etcd: start member %s: %w", cfg.Name, err)
	}
	timeout := cfg.StartTimeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcd: member %s failed: %w", cfg.Name, err)
	case <-time.After(timeout):
		e.Close()
		return nil, fmt.Errorf("etcd: member %s not ready after %s (is a quorum of members up?)", cfg.Name, timeout)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("etcd: start member %s: %w", cfg.Name, ctx.Err())
	}
	m := &Member{etcd: e, Endpoint: client.String()}
	// A serializable probe: a member that joined as a learner serves
	// nothing else until it is promoted.
	m.client, err = connect(ctx, []string{m.Endpoint}, nil, true)
	if err != nil {
		e.Close()
		return nil, err
	}
	return m, nil
}

// Client returns the client connected to this member.
func (m *Member) Client() *clientv3.Client { return m.client }

// ID is the member's etcd ID.
func (m *Member) ID() uint64 { return uint64(m.etcd.Server.MemberID()) }

// IsLeader reports whether this member leads the raft group now.
func (m *Member) IsLeader() bool { return m.etcd.Server.Leader() == m.etcd.Server.MemberID() }

// Err reports a fatal error of the running member.
func (m *Member) Err() <-chan error { return m.etcd.Err() }

// Close stops the client and the member; the member's data stays. Closing
// again does nothing.
func (m *Member) Close() error {
	m.closeOnce.Do(func() {
		m.closeErr = m.client.Close()
		m.etcd.Close()
	})
	return m.closeErr
}

// Connect returns a client for endpoints, with mutual TLS when tlsFiles is
// set (external clusters), and checks that the cluster answers.
func Connect(ctx context.Context, endpoints []string, tlsFiles *TLSFiles) (*clientv3.Client, error) {
	return connect(ctx, endpoints, tlsFiles, false)
}

func connect(ctx context.Context, endpoints []string, tlsFiles *TLSFiles, serializable bool) (*clientv3.Client, error) {
	cfg := clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 10 * time.Second,
		Logger:      zap.NewNop(),
		Context:     ctx,
		DialOptions: []grpc.DialOption{},
		// Let a client survive an unreachable endpoint of an external
		// cluster without hanging forever on one request.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
	}
	// The client must outlive the ctx used to start it.
	cfg.Context = context.WithoutCancel(ctx)
	if !tlsFiles.empty() {
		info := transport.TLSInfo{CertFile: tlsFiles.CertFile, KeyFile: tlsFiles.KeyFile, TrustedCAFile: tlsFiles.CAFile}
		tc, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd: client TLS: %w", err)
		}
		cfg.TLS = tc
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd: connect %s: %w", strings.Join(endpoints, ","), err)
	}
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	// A linearizable read proves a quorum answers, not just a socket.
	var opts []clientv3.OpOption
	if serializable {
		opts = append(opts, clientv3.WithSerializable())
	}
	if _, err := cli.Get(sctx, "health-probe", opts...); err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcd: cluster at %s does not answer: %w", strings.Join(endpoints, ","), err)
	}
	return cli, nil
}

// DropPeerConnections closes every connection other members (or anyone)
// opened to this member's peer port, and returns how many. etcd checks a
// peer's certificate against the CRL only when it accepts a connection, so
// once the CRL lists a removed manager, this is what ends the connections
// that manager opened before: every peer handshakes again, the removed
// one is refused. Remaining members reconnect within moments; raft
// retransmits what was in flight.
func (m *Member) DropPeerConnections() (int, error) {
	n := 0
	for _, p := range m.etcd.Peers {
		addr, err := netip.ParseAddrPort(p.Listener.Addr().String())
		if err != nil {
			return n, fmt.Errorf("etcd: peer listener %s: %w", p.Listener.Addr(), err)
		}
		k, err := sockdiag.DestroyAccepted(addr)
		n += k
		if err != nil {
			return n, fmt.Errorf("etcd: close peer connections on %s: %w", addr, err)
		}
	}
	return n, nil
}

// IsLearner reports whether this member is a learner (not yet promoted).
func (m *Member) IsLearner() bool { return m.etcd.Server.IsLearner() }

// AddMember adds a member with peerURL to the cluster cli talks to, as a
// learner, and returns the InitialCluster string the new member must start
// with. A learner does not count toward quorum, so a joiner that never
// starts costs the cluster nothing; PromoteMember makes it a voter once it
// has caught up. If a member with that peer URL exists already but never
// started (a join that failed half-way), it is reused.
func AddMember(ctx context.Context, cli *clientv3.Client, name, peerURL string) (string, error) {
	list, err := cli.MemberList(ctx)
	if err != nil {
		return "", fmt.Errorf("etcd: list members: %w", err)
	}
	found := false
	for _, m := range list.Members {
		for _, u := range m.PeerURLs {
			if u == peerURL {
				if m.Name != "" {
					return "", fmt.Errorf("etcd: peer URL %s belongs to running member %s", peerURL, m.Name)
				}
				found = true
			}
		}
	}
	members := list.Members
	if !found {
		resp, err := cli.MemberAddAsLearner(ctx, []string{peerURL})
		if err != nil {
			return "", fmt.Errorf("etcd: add member %s: %w", peerURL, err)
		}
		members = resp.Members
	}
	var parts []string
	for _, m := range members {
		n := m.Name
		isNew := false
		for _, u := range m.PeerURLs {
			if u == peerURL {
				isNew = true
			}
		}
		if isNew {
			n = name
		}
		if n == "" {
			// Another member that was added but has not started yet:
			// it cannot be named, and etcd refuses an initial cluster
			// without it, so the join must wait.
			return "", fmt.Errorf("etcd: member %x is added but not started; retry once it runs", m.ID)
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, n+"="+u)
		}
	}
	return strings.Join(parts, ","), nil
}

// ErrLearnerNotReady is returned by PromoteMember while the learner is still
// catching up with the leader.
var ErrLearnerNotReady = errors.New("etcd: the learner is not in sync with the leader yet")

// PromoteMember makes the learner named name (or with peer URL peerURL, for
// a learner that has not published its name yet) a voting member. It is a
// no-op for a member that votes already.
func PromoteMember(ctx context.Context, cli *clientv3.Client, name, peerURL string) error {
	list, err := cli.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("etcd: list members: %w", err)
	}
	for _, m := range list.Members {
		match := m.Name == name
		for _, u := range m.PeerURLs {
			match = match || u == peerURL
		}
		if !match {
			continue
		}
		if !m.IsLearner {
			return nil
		}
		if _, err := cli.MemberPromote(ctx, m.ID); err != nil {
			if errors.Is(err, rpctypes.ErrMemberLearnerNotReady) || strings.Contains(err.Error(), rpctypes.ErrMemberLearnerNotReady.Error()) {
				return fmt.Errorf("%w: %v", ErrLearnerNotReady, err)
			}
			return fmt.Errorf("etcd: promote member %s: %w", name, err)
		}
		return nil
	}
	return fmt.Errorf("etcd: no member %s (%s)", name, peerURL)
}

// ErrNoMember: no member has the name given to RemoveMember.
var ErrNoMember = errors.New("etcd: no such member")

// RemoveMember removes the member named name from the cluster.
func RemoveMember(ctx context.Context, cli *clientv3.Client, name string) error {
	list, err := cli.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("etcd: list members: %w", err)
	}
	for _, m := range list.Members {
		if m.Name == name {
			if _, err := cli.MemberRemove(ctx, m.ID); err != nil {
				return fmt.Errorf("etcd: remove member %s: %w", name, err)
			}
			return nil
		}
	}
	return fmt.Errorf("%w named %s", ErrNoMember, name)
}

// The cluster operations below run on the member's own client: the
// manager package asks its member, and never holds an etcd client itself.

// AddMember adds a learner with peerURL named name (see the package
// function), retrying while etcd calls the cluster unhealthy: it refuses
// a new member until the last one to join has been up for a few seconds,
// and allows one learner at a time, which is what happens when managers
// join one right after the other.
func (m *Member) AddMember(ctx context.Context, name, peerURL string) (string, error) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		initial, err := AddMember(ctx, m.client, name, peerURL)
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

func retryableAdd(err error) bool {
	return errors.Is(err, rpctypes.ErrUnhealthy) ||
		strings.Contains(err.Error(), rpctypes.ErrUnhealthy.Error()) ||
		strings.Contains(err.Error(), "too many learner")
}

// PromoteMember is the package function on this member's cluster.
func (m *Member) PromoteMember(ctx context.Context, name, peerURL string) error {
	return PromoteMember(ctx, m.client, name, peerURL)
}

// RemoveMember removes the member named name, retrying while the cluster
// cannot commit it (no leader yet, unhealthy) until ctx ends. A member
// that is not (or no longer) in the cluster is not an error.
func (m *Member) RemoveMember(ctx context.Context, name string) error {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		err := RemoveMember(ctx, m.client, name)
		if err == nil || errors.Is(err, ErrNoMember) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up: %v)", err, ctx.Err())
		case <-t.C:
		}
	}
}
