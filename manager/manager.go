package manager

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"

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
	// JoinToken is zeroed once the join has used it.
	JoinAddr  string
	JoinToken []byte
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

	// forwardTTL replaces defaultForwardTTL (tests).
	forwardTTL time.Duration
}

// Manager is one running manager.
type Manager struct {
	cfg Config
	log *slog.Logger

	st     *state
	member *etcd.Member // nil with external etcd
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
	// sock serves the admin socket (nil without one): Unlock alone while
	// awaiting, then fullAdmin (see socketServer).
	sock       *grpc.Server
	fullAdmin  atomic.Pointer[admin.Server]
	awaiting   atomic.Bool
	unlockReqs chan unlockReq
	// pendingUnlock answers the Unlock call that opened the key files,
	// once the manager serves; unlockNote is what it is told then.
	pendingUnlock chan error
	unlockNote    error
	// runCtx ends with Run (for work started by callbacks).
	runCtx context.Context

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
	if (cfg.JoinAddr == "") != (len(cfg.JoinToken) == 0) {
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
	return &Manager{cfg: cfg, log: log, ready: make(chan struct{}), stopped: make(chan struct{}), adminMetrics: newAdminMetrics(),
		unlockReqs: make(chan unlockReq)}, nil
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
	sockErr := make(chan error, 1)
	if m.cfg.AdminSocket != "" {
		l, err := listenAdminSocket(m.cfg.AdminSocket, m.log)
		if err != nil {
			return fmt.Errorf("manager: %w", err)
		}
		m.sock = m.socketServer()
		go func() { sockErr <- m.sock.Serve(l) }()
		defer func() {
			m.sock.Stop()
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
	m.runCtx = runCtx
	if err := m.start(runCtx); err != nil {
		return err
	}

	c, err := ca.Open(runCtx, m.store, m.keys)
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	m.caPtr.Store(c)
	if m.st.Autolock {
		m.retireClearAdminKey(runCtx)
	}
	go m.keys.WatchKeyring(runCtx, func(err error) {
		if err != nil {
			m.log.Warn("keyring reload failed", "err", err)
		}
	})

	m.disp = dispatcher.New(dispatcher.Config{
		Store:           m.store,
		History:         m.store,
		Managers:        m.managerList,
		HeartbeatPeriod: m.cfg.HeartbeatPeriod,
		Logger:          m.log,
		Audit:           m.store,
		NodeID:          m.st.NodeID,
		Containers:      m.store,
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
		Live:       m.disp,
		Logger:     m.log,
	})
	if err != nil {
		return err
	}
	tcp, err := m.tcpServer(adminSrv)
	if err != nil {
		return err
	}
	go m.renewLoop(runCtx)
	go m.compactAuditLoop(runCtx)
	serveErr := make(chan error, 2)
	go func() { serveErr <- tcp.Serve(m.listener) }()
	defer tcp.Stop()
	m.fullAdmin.Store(adminSrv)
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
	case err := <-sockErr:
		return fmt.Errorf("manager: admin socket server stopped: %w", err)
	}
}

func (m *Manager) closeEtcd() {
	if m.member != nil {
		m.member.Close()
	} else if m.store != nil {
		m.store.Close()
	}
}
