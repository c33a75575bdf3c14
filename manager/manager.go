package manager

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	caapi "github.com/lockbox-project/lockbox/api/ca"
	clusterapi "github.com/lockbox-project/lockbox/api/cluster"
	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/internal/metrics"
	"github.com/lockbox-project/lockbox/internal/secretmem"
	"github.com/lockbox-project/lockbox/manager/admin"
	"github.com/lockbox-project/lockbox/manager/ca"
	"github.com/lockbox-project/lockbox/manager/dispatcher"
	"github.com/lockbox-project/lockbox/manager/etcd"
	"github.com/lockbox-project/lockbox/manager/keys"
	"github.com/lockbox-project/lockbox/manager/store"
)

// DefaultListenAddr is where a manager listens unless told otherwise: the
// port is Lockbox's own (swarm uses 2377); etcd peers use the next one.
const DefaultListenAddr = "0.0.0.0:4242"

// DefaultAdminSocket is the root-only admin socket, like dockerd's.
const DefaultAdminSocket = "/run/lockbox/manager.sock"

// Config is what a manager is started with (the flags of `lockbox manager`).
type Config struct {
	DataDir string
	// ListenAddr is the TCP address of the gRPC listener.
	ListenAddr string
	// AdvertiseAddr is the host:port other managers and agents dial;
	// default: ListenAddr, or the first non-loopback address when
	// ListenAddr is a wildcard.
	AdvertiseAddr string
	// AdminSocket is the unix admin socket; "" serves admin over TCP only.
	AdminSocket string
	// Autolock keeps the data key wrapped by an unlock key printed once at
	// init; a restarted manager waits for `lockbox unlock`.
	Autolock bool
	// JoinAddr and JoinToken join an existing cluster (first start only).
	JoinAddr, JoinToken string
	// EtcdEndpoints uses an external etcd cluster instead of an embedded
	// member; EtcdTLS are its client credentials, if it wants them.
	EtcdEndpoints []string
	EtcdTLS       *etcd.TLSFiles
	// EtcdPeerPort is the embedded member's peer port; 0 means the listen
	// port plus one.
	EtcdPeerPort int
	// HeartbeatPeriod is told to agents (default 5s).
	HeartbeatPeriod time.Duration
	Logger          *slog.Logger
	// EtcdLogger receives etcd's own logs (nil: discarded).
	EtcdLogger *zap.Logger
	// Out is where the unlock key is printed, once, at init (os.Stdout).
	Out io.Writer
	// MetricsAddr serves Prometheus metrics over plain HTTP on /metrics;
	// "" (the default) serves none.
	MetricsAddr string
	// UnauthRate and UnauthBurst limit the calls made without a
	// certificate (root CA, join) per peer address; zero means
	// DefaultUnauthRate / DefaultUnauthBurst, rate.Inf no limit.
	UnauthRate  rate.Limit
	UnauthBurst int
}

// Manager is one running manager.
type Manager struct {
	cfg Config
	log *slog.Logger

	st     *state
	member *etcd.Member // nil with external etcd
	cli    *clientv3.Client
	keys   *keys.Manager
	caPtr  atomic.Pointer[ca.CA]
	store  *store.Store
	disp   *dispatcher.Dispatcher

	listener  net.Listener
	advertise string
	own       atomic.Pointer[tls.Certificate]
	managers  atomic.Pointer[[]string]

	ready     chan struct{}
	readyOnce sync.Once
	stopped   chan struct{}

	// nodeKey is the manager's TLS key, sealed on disk under autolock.
	nodeKey *nodeKey
	// sockQ hands admin-socket connections from the locked server
	// (lockedSrv, Unlock only) to the full one; nil without a socket.
	sockQ     *connQueue
	lockedSrv *grpc.Server
	// pendingUnlock answers the Unlock call that opened the key files,
	// once the manager serves; unlockNote is what it is told then.
	pendingUnlock chan error
	unlockNote    error

	adminMetrics *adminMetrics
	metricsSrv   *metrics.Server // nil without MetricsAddr

	// testHookLearner runs when this member starts as a learner, before
	// it asks for promotion (tests interrupt joins with it).
	testHookLearner func() error
}

// New checks cfg and returns a manager; Run starts it.
func New(cfg Config) (*Manager, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("manager: --data-dir is required")
	}
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = DefaultListenAddr
	}
	if (cfg.JoinAddr == "") != (cfg.JoinToken == "") {
		return nil, errors.New("manager: --join and --token go together")
	}
	if cfg.HeartbeatPeriod == 0 {
		cfg.HeartbeatPeriod = 5 * time.Second
	}
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Manager{cfg: cfg, log: log, ready: make(chan struct{}), stopped: make(chan struct{}), adminMetrics: newAdminMetrics()}, nil
}

// Ready is closed when the manager serves (locked or not).
func (m *Manager) Ready() <-chan struct{} { return m.ready }

// Addr is the address the TCP listener is bound to: after Ready, and
// under autolock after the unlock ("" before).
func (m *Manager) Addr() string {
	if m.listener == nil {
		return ""
	}
	return m.listener.Addr().String()
}

// NodeID is this manager's node ID (after Ready).
func (m *Manager) NodeID() string { return m.st.NodeID }

// IsEtcdLeader reports whether this manager's embedded member leads etcd.
func (m *Manager) IsEtcdLeader() bool { return m.member != nil && m.member.IsLeader() }

// Store is the manager's store (after Ready), for tests and tools.
func (m *Manager) Store() *store.Store { return m.store }

func (m *Manager) ca() *ca.CA { return m.caPtr.Load() }

// Run starts the manager — initialising the cluster or joining one on the
// first start — and serves until ctx ends or etcd fails.
func (m *Manager) Run(ctx context.Context) (err error) {
	defer close(m.stopped)
	// Keys live in this process: no core file, no ptrace or /proc/PID/mem
	// for anyone without CAP_SYS_PTRACE.
	if err := secretmem.Harden(); err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	warnOpenFiles(m.log)
	if err := os.MkdirAll(m.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("manager: data dir: %w", err)
	}
	if err := os.Chmod(m.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("manager: data dir: %w", err)
	}
	// The admin socket comes first: a locked manager serves Unlock there.
	if m.cfg.AdminSocket != "" {
		l, err := listenAdminSocket(m.cfg.AdminSocket, m.log)
		if err != nil {
			return fmt.Errorf("manager: %w", err)
		}
		m.sockQ = newConnQueue(l)
		defer func() {
			m.sockQ.close()
			os.Remove(m.cfg.AdminSocket)
		}()
	}
	defer func() {
		if m.listener != nil {
			m.listener.Close()
		}
	}()
	// An Unlock call still waiting hears why the start failed.
	defer func() { m.finishUnlock(err) }()
	defer func() {
		if m.nodeKey != nil {
			m.nodeKey.close()
		}
	}()

	// Deferred in this order so that everything using etcd is cancelled
	// before etcd closes.
	defer m.closeEtcd()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := m.start(runCtx); err != nil {
		return err
	}

	c, err := ca.Open(runCtx, m.cli, m.keys)
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	m.caPtr.Store(c)
	m.store = store.New(m.cli, m.keys)
	go m.keys.WatchKeyring(runCtx, func(err error) {
		if err != nil {
			m.log.Warn("keyring reload failed", "err", err)
		}
	})

	m.disp = dispatcher.New(dispatcher.Config{
		Store:           m.store,
		History:         dispatcher.EtcdHistory{Client: m.cli, Prefix: m.store.Prefix()},
		Managers:        m.managerList,
		HeartbeatPeriod: m.cfg.HeartbeatPeriod,
		Logger:          m.log,
	})
	go func() {
		if err := m.disp.Run(runCtx); err != nil && runCtx.Err() == nil {
			m.log.Error("dispatcher stopped", "err", err)
		}
	}()
	if m.cfg.MetricsAddr != "" {
		if m.metricsSrv, err = m.serveMetrics(); err != nil {
			return fmt.Errorf("manager: %w", err)
		}
		defer m.metricsSrv.Close()
	}
	revoked := make(chan string, 256)
	c.SubscribeRevocations(revoked)
	go func() {
		for {
			select {
			case <-runCtx.Done():
				return
			case id := <-revoked:
				m.disp.EndSession(id, dispatcher.ErrRevoked)
			}
		}
	}()
	if err := m.registerSelf(runCtx); err != nil {
		return err
	}

	// Data-key rotation re-seals the store's secrets and the CA's key and
	// join tokens.
	km := admin.KeyManager{Keys: m.keys, Store: m.store, Extra: []keys.Resealer{c}}
	adminSrv, err := admin.New(admin.Config{
		Store:      m.store,
		Tokens:     tokenIssuer{m},
		Unlocker:   unlocker{KeyManager: km, m: m},
		Nodes:      revoker{m},
		DataKeys:   km,
		AdminCreds: adminCreds{m},
		Managers:   m.managerList,
	})
	if err != nil {
		return err
	}
	tcp, err := m.tcpServer(adminSrv)
	if err != nil {
		return err
	}
	go m.renewLoop(runCtx)
	serveErr := make(chan error, 2)
	go func() { serveErr <- tcp.Serve(m.listener) }()
	defer tcp.Stop()
	if m.sockQ != nil {
		u, s := socketOnly(m.keys.Locked)
		sock := grpc.NewServer(grpc.ChainUnaryInterceptor(m.adminMetrics.unary, u), grpc.ChainStreamInterceptor(s),
			grpc.MaxRecvMsgSize(maxRecvMsgSize), grpc.MaxConcurrentStreams(maxConcurrentStreams))
		adminapi.RegisterAdminServer(sock, adminSrv)
		go func() { serveErr <- sock.Serve(m.sockQ.listener()) }()
		defer sock.Stop()
	}
	m.log.Info("manager ready", "node", m.st.NodeID, "cluster", m.st.ClusterID, "listen", m.listener.Addr().String(),
		"advertise", m.advertise, "admin_socket", m.cfg.AdminSocket, "locked", m.keys.Locked())
	m.finishUnlock(m.unlockNote)
	m.markReady()

	var etcdErr <-chan error
	if m.member != nil {
		etcdErr = m.member.Err()
	}
	select {
	case <-ctx.Done():
		m.log.Info("manager stopping")
		return nil
	case err := <-etcdErr:
		return fmt.Errorf("manager: etcd member failed: %w", err)
	case err := <-serveErr:
		return fmt.Errorf("manager: server stopped: %w", err)
	}
}

func (m *Manager) closeEtcd() {
	if m.member != nil {
		m.member.Close()
	} else if m.cli != nil {
		m.cli.Close()
	}
}

func (m *Manager) tcpServer(adminSrv *admin.Server) (*grpc.Server, error) {
	own, err := m.nodeKey.pair()
	if err != nil {
		return nil, err
	}
	m.own.Store(&own)
	c := m.ca()
	az := &authorizer{ca: m.ca, locked: m.keys.Locked}
	s := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(c.ServerTLS(m.own.Load))),
		// Counted first, so that refusals count too; the rate limit
		// comes before any work.
		grpc.ChainUnaryInterceptor(m.adminMetrics.unary, newPeerLimiter(m.cfg.UnauthRate, m.cfg.UnauthBurst).unary, az.unary),
		grpc.ChainStreamInterceptor(az.stream),
		grpc.MaxRecvMsgSize(maxRecvMsgSize),
		grpc.MaxConcurrentStreams(maxConcurrentStreams),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// Thousands of mostly idle agent connections: each reads through a
		// small buffer (messages are small; a big one just takes more
		// reads) and writes through a smaller one (gRPC pools it between
		// writes). Measured: 77 -> 47 KB live per connected stream.
		grpc.WriteBufferSize(16<<10),
		grpc.ReadBufferSize(4<<10),
		// The dispatcher sends session messages pre-encoded, each change
		// marshalled once per fan-out for every node.
		grpc.ForceServerCodecV2(dispatcher.Codec{}),
	)
	caapi.RegisterNodeCAServer(s, ca.NewServer(c, registrar{m}, m.managerList, m.log))
	dapi.RegisterDispatcherServer(s, m.disp)
	adminapi.RegisterAdminServer(s, adminSrv)
	clusterapi.RegisterClusterServer(s, &clusterServer{m: m})
	return s, nil
}

// start brings up etcd and the keys: first start (init or join) or restart.
func (m *Manager) start(ctx context.Context) error {
	st, err := m.loadState()
	if err != nil {
		return err
	}
	if st == nil {
		if err := m.listenTCP(); err != nil {
			return err
		}
		if m.cfg.JoinAddr != "" {
			return m.join(ctx)
		}
		return m.initialize(ctx)
	}
	if m.cfg.JoinAddr != "" {
		m.log.Warn("--join is ignored: this data dir already belongs to a cluster", "cluster", st.ClusterID)
	}
	m.st = st
	m.nodeKey = newNodeKey(m.cfg.DataDir, st.Autolock)
	var kek *keys.KEK
	if st.Autolock {
		// Nothing listens on TCP and etcd stays down until the key
		// files open.
		if kek, err = m.awaitUnlock(ctx, m.nodeKey.open); err != nil {
			return err
		}
		defer kek.Zero()
	} else if err := m.nodeKey.open(nil); err != nil {
		return err
	}
	if err := m.listenTCP(); err != nil {
		return err
	}
	return m.restart(ctx, kek)
}

// listenTCP binds the TCP listener and works out the advertised address.
func (m *Manager) listenTCP() (err error) {
	m.listener, err = net.Listen("tcp", m.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("manager: listen on %s: %w", m.cfg.ListenAddr, err)
	}
	m.advertise, err = advertiseAddr(m.cfg.AdvertiseAddr, m.listener.Addr().String())
	return err
}

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

func (m *Manager) startEtcd(ctx context.Context, initialCluster string) error {
	if len(m.cfg.EtcdEndpoints) > 0 {
		cli, err := etcd.Connect(ctx, m.cfg.EtcdEndpoints, m.cfg.EtcdTLS)
		if err != nil {
			return fmt.Errorf("manager: %w", err)
		}
		m.cli = cli
		return nil
	}
	peerTLS, err := m.nodeKey.etcdFiles()
	if err != nil {
		return err
	}
	member, err := etcd.Start(ctx, etcd.Config{
		Dir:            m.path("etcd"),
		Name:           m.st.NodeID,
		PeerURL:        m.st.PeerURL,
		PeerTLS:        peerTLS,
		InitialCluster: initialCluster,
		Logger:         m.cfg.EtcdLogger,
	})
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	m.member, m.cli = member, member.Client()
	return nil
}

// initialize creates a new cluster: CA, data keys, tokens, the manager's
// own node and admin credentials.
func (m *Manager) initialize(ctx context.Context) error {
	root, err := ca.NewRoot()
	if err != nil {
		return err
	}
	nodeID, err := ca.NewID()
	if err != nil {
		return err
	}
	m.st = &state{NodeID: nodeID, ClusterID: root.ClusterID, Autolock: m.cfg.Autolock}
	if len(m.cfg.EtcdEndpoints) == 0 {
		if m.st.PeerURL, err = m.peerURL(); err != nil {
			return err
		}
	}
	req, err := m.ownCertRequest(nodeID)
	if err != nil {
		return err
	}
	own, err := root.NewKeyPair(req)
	if err != nil {
		return err
	}
	var kek *keys.KEK
	unlockKey := ""
	if m.cfg.Autolock {
		if unlockKey, err = keys.NewUnlockKey(); err != nil {
			return err
		}
		kek, err = keys.KEKFromUnlockKey(unlockKey)
	} else {
		kek, err = keys.CreateKeyFile(m.path("kek"))
	}
	if err != nil {
		return err
	}
	defer kek.Zero()
	m.nodeKey = newNodeKey(m.cfg.DataDir, m.cfg.Autolock)
	m.nodeKey.useKEK(kek)
	if err := m.nodeKey.store(own.CertPEM, own.KeyPEM, root.CertPEM); err != nil {
		return err
	}
	if err := m.startEtcd(ctx, ""); err != nil {
		return err
	}
	m.keys = keys.NewManager(m.cli, store.DefaultPrefix)
	m.keys.OnKEKChange(m.kekChanged)
	created, err := m.keys.Bootstrap(ctx, kek, unlockKey)
	if err != nil {
		return fmt.Errorf("manager: create data keys: %w", err)
	}
	if !created {
		return errors.New("manager: etcd already holds a Lockbox cluster: join it with --join and a manager token")
	}
	if err := ca.Save(ctx, m.cli, m.keys, root); err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	st := store.New(m.cli, m.keys)
	ownCert, _ := parsePEMCert(own.CertPEM)
	if _, err := st.CreateNode(ctx, &types.Node{
		Id:          nodeID,
		Role:        types.NodeRole_NODE_ROLE_MANAGER,
		Description: describeSelf(),
		State:       types.NodeState_NODE_STATE_READY,
		LastSeen:    timestamppb.Now(),
		Certificate: certInfo(ownCert),
		Addr:        m.advertise,
	}); err != nil {
		return fmt.Errorf("manager: record own node: %w", err)
	}
	if err := m.writeInitAdminCredentials(root); err != nil {
		return err
	}
	if err := m.saveState(m.st); err != nil {
		return err
	}
	if m.cfg.Autolock {
		fmt.Fprintf(m.cfg.Out, "Autolock is on. Keep this unlock key safe; it is shown only now:\n\n    %s\n\nA restarted manager serves nothing until 'lockbox unlock' is given this key.\n", unlockKey)
	}
	m.log.Info("cluster initialised", "cluster", root.ClusterID, "node", nodeID, "admin_credentials", m.path("admin"))
	return nil
}

// restart brings back a manager that has run before; kek is the KEK from
// the unlock key under autolock (nil otherwise).
func (m *Manager) restart(ctx context.Context, kek *keys.KEK) error {
	if err := m.startEtcd(ctx, m.st.InitialCluster); err != nil {
		return err
	}
	if m.member != nil && m.member.IsLearner() {
		if m.testHookLearner != nil {
			if err := m.testHookLearner(); err != nil {
				return err
			}
		}
		if err := m.promoteSelf(ctx); err != nil {
			return err
		}
	}
	m.keys = keys.NewManager(m.cli, store.DefaultPrefix)
	m.keys.OnKEKChange(m.kekChanged)
	if m.st.Autolock {
		switch err := m.keys.Unlock(ctx, kek); {
		case errors.Is(err, keys.ErrWrongKey):
			// Rotated while this manager was down: its files open with
			// the old key, the keyring only with the current one, which
			// the next Unlock gives (the files are then re-sealed).
			m.log.Warn("autolock: the unlock key opened this manager's files but not the keyring (rotated meanwhile); waiting for the current key")
			m.unlockNote = errRotatedWhileDown
			return nil
		case err != nil:
			return fmt.Errorf("manager: unlock data keys: %w", err)
		}
		m.log.Info("manager unlocked")
		return nil
	}
	kek, err := keys.LoadKeyFile(m.path("kek"))
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	defer kek.Zero()
	// A rotation made while this manager was down is followed (and the
	// file rewritten by kekChanged).
	if err := m.keys.UnlockFollowing(ctx, kek); err != nil {
		return fmt.Errorf("manager: unlock data keys with %s: %w (if the key-encryption key was rotated and a data-key rotation followed while this manager was down, copy the kek file from a running manager)", m.path("kek"), err)
	}
	return nil
}

func (m *Manager) ownCertRequest(nodeID string) (ca.CertRequest, error) {
	host, _, err := net.SplitHostPort(m.advertise)
	if err != nil {
		return ca.CertRequest{}, err
	}
	req := ca.CertRequest{NodeID: nodeID, Role: ca.RoleManager}
	if ip := net.ParseIP(host); ip != nil {
		req.IPs = append(req.IPs, ip)
	} else {
		req.DNSNames = append(req.DNSNames, host)
	}
	return req, nil
}

// renewLoop renews the manager's own certificate when a third of its life
// is left (checked at start and then hourly; skipped while locked, since
// signing needs the CA key).
func (m *Manager) renewLoop(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if err := m.renewOwnCert(ctx, time.Now()); err != nil {
			m.log.Warn("cannot renew the manager's certificate", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *Manager) renewOwnCert(ctx context.Context, now time.Time) error {
	cur := m.own.Load()
	if cur == nil || m.keys.Locked() {
		return nil
	}
	leaf, err := x509.ParseCertificate(cur.Certificate[0])
	if err != nil {
		return err
	}
	if !ca.NeedsRenewal(leaf, now) {
		return nil
	}
	req, err := m.ownCertRequest(m.st.NodeID)
	if err != nil {
		return err
	}
	kp, err := m.ca().IssueKeyPair(req)
	if err != nil {
		return err
	}
	defer clear(kp.KeyPEM)
	pair, err := kp.TLSCertificate()
	if err != nil {
		return err
	}
	// etcd reads the files at each peer handshake; gRPC takes the pair.
	if err := m.nodeKey.store(kp.CertPEM, kp.KeyPEM, m.ca().CertPEM); err != nil {
		return err
	}
	m.own.Store(&pair)
	newLeaf, _ := parsePEMCert(kp.CertPEM)
	if _, err := m.store.UpdateNode(ctx, m.st.NodeID, func(n *types.Node) error {
		n.Certificate = certInfo(newLeaf)
		return nil
	}); err != nil {
		m.log.Warn("renewed certificate not recorded on the node", "err", err)
	}
	m.log.Info("manager certificate renewed", "not_after", newLeaf.NotAfter)
	return nil
}

// kekChanged follows a new KEK (a rotation, here or on another manager):
// under autolock it re-seals the manager's key files, without autolock it
// rewrites the KEK file.
func (m *Manager) kekChanged(kek *keys.KEK) {
	if m.st.Autolock {
		if err := m.nodeKey.reseal(kek); err != nil {
			m.log.Error("cannot re-seal this manager's key files under the new unlock key", "err", err)
		}
		return
	}
	defer kek.Zero()
	if cur, err := keys.LoadKeyFile(m.path("kek")); err == nil {
		same := cur.ID() == kek.ID()
		cur.Zero()
		if same {
			return
		}
	}
	if err := keys.ReplaceKeyFile(m.path("kek"), kek); err != nil {
		m.log.Error("cannot write the rotated key-encryption key file", "err", err)
		return
	}
	m.log.Info("key-encryption key file replaced after a rotation")
}

// registerSelf publishes this manager's address under a lease, so the
// list agents receive drops a manager that is gone.
func (m *Manager) registerSelf(ctx context.Context) error {
	lease, err := m.cli.Grant(ctx, 15)
	if err != nil {
		return fmt.Errorf("manager: register address: %w", err)
	}
	if _, err := m.cli.Put(ctx, managersPrefix+m.st.NodeID, m.advertise, clientv3.WithLease(lease.ID)); err != nil {
		return fmt.Errorf("manager: register address: %w", err)
	}
	ka, err := m.cli.KeepAlive(ctx, lease.ID)
	if err != nil {
		return fmt.Errorf("manager: register address: %w", err)
	}
	go func() {
		for range ka {
		}
	}()
	rev := m.refreshManagers(ctx)
	go m.followManagers(ctx, rev)
	// The manager's own node shows where it is and that it runs.
	if _, err := m.store.UpdateNode(ctx, m.st.NodeID, func(n *types.Node) error {
		n.State = types.NodeState_NODE_STATE_READY
		n.LastSeen = timestamppb.Now()
		n.Addr = m.advertise
		if n.Description == nil {
			n.Description = describeSelf()
		}
		return nil
	}); err != nil {
		m.log.Warn("cannot record this manager's node", "err", err)
	}
	return nil
}

// followManagers keeps the manager list current and tells connected
// agents when it changes.
func (m *Manager) followManagers(ctx context.Context, rev int64) {
	for ctx.Err() == nil {
		for wr := range m.cli.Watch(clientv3.WithRequireLeader(ctx), managersPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
			if wr.Err() != nil {
				break
			}
			if r := m.refreshManagers(ctx); r > rev {
				rev = r
			}
		}
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if r := m.refreshManagers(ctx); r > rev {
			rev = r
		}
	}
}

const managersPrefix = "/lockbox/cluster/managers/"

func (m *Manager) refreshManagers(ctx context.Context) int64 {
	resp, err := m.cli.Get(ctx, managersPrefix, clientv3.WithPrefix())
	if err != nil {
		return 0
	}
	list := []string{}
	for _, kv := range resp.Kvs {
		list = append(list, string(kv.Value))
	}
	if old := m.managers.Swap(&list); old != nil && !slices.Equal(*old, list) && m.disp != nil {
		m.disp.ManagersChanged()
	}
	return resp.Header.Revision
}

func (m *Manager) managerList() []string {
	if p := m.managers.Load(); p != nil {
		return *p
	}
	return []string{m.advertise}
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

func parsePEMCert(p []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(p)
	if b == nil {
		return nil, errors.New("not a PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}

func certInfo(c *x509.Certificate) *types.NodeCertificate {
	if c == nil {
		return nil
	}
	return &types.NodeCertificate{Serial: c.SerialNumber.Text(16), NotAfter: timestamppb.New(c.NotAfter)}
}
