package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/status"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
)

// Applier takes the stream's messages: the grant cache.
type Applier interface {
	Apply(msg *dapi.SessionMessage) error
	Revision() uint64
	SetNodeID(id string)
}

// Config is what a Session needs.
type Config struct {
	// StateDir holds the node's credentials and the known managers.
	StateDir string
	// Managers are the addresses given on the command line (host:port,
	// optionally tcp://host:port).
	Managers []string
	// Token is the worker join token; needed only until the node has
	// joined. New zeroes it before it returns, used or not.
	Token       []byte
	Description *types.NodeDescription
	Cache       Applier
	Log         *slog.Logger
	// MinBackoff and MaxBackoff bound the wait between attempts; defaults
	// 100ms and 10s. MaxUnreachedBackoff bounds it while no manager
	// listens at all; default 1s (api/dispatcher.Backoff says why).
	MinBackoff, MaxBackoff, MaxUnreachedBackoff time.Duration
	// FirstMessageTimeout bounds the wait for a session's first message,
	// so that a manager that accepts the stream but never answers does
	// not hold the node; default 30s.
	FirstMessageTimeout time.Duration
}

// Session keeps the node connected to some manager.
type Session struct {
	cfg Config
	id  *Identity
	log *slog.Logger

	mu       sync.Mutex
	managers []string
	current  string // the manager of the live session, if any
	// inventory lists the containers the node holds (SetInventory).
	inventory Inventory

	// full asks the next session for a COMPLETE message: set after a
	// message could not be applied.
	full      atomic.Bool
	connected atomic.Bool
	period    atomic.Int64 // heartbeat period in ns
	// connects counts the sessions that came up (metrics).
	connects atomic.Uint64
	// reports wait for the next heartbeat (reports.go).
	reports reportQueue

	// stateCh is told of every connect and disconnect (tests wait on it).
	stateCh chan bool
	// after is time.After, replaced in tests of the renewal schedule and
	// of heartbeats.
	after func(time.Duration) <-chan time.Time
}

func normalize(addr string) string {
	return strings.TrimPrefix(strings.TrimSpace(addr), "tcp://")
}

func mergeAddrs(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		for _, a := range l {
			if a = normalize(a); a != "" && !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	return out
}

// New loads the node's credentials from the state directory, or, on a
// first start, joins the cluster with cfg.Token through the first manager
// that answers.
func New(ctx context.Context, cfg Config) (*Session, error) {
	// Nothing keeps the token: it is zeroed whether it was needed or not.
	defer clear(cfg.Token)
	if cfg.Cache == nil {
		return nil, errors.New("session: no grant cache")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.FirstMessageTimeout <= 0 {
		cfg.FirstMessageTimeout = 30 * time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(10*time.Second, cfg.MinBackoff)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir %s: %w", cfg.StateDir, err)
	}
	s := &Session{cfg: cfg, log: cfg.Log, stateCh: make(chan bool, 16), after: time.After}
	s.managers = mergeAddrs(cfg.Managers, loadManagers(cfg.StateDir))

	id, err := loadIdentity(cfg.StateDir)
	switch {
	case err == nil:
		s.id = id
		s.log.Info("node credentials loaded", "node", id.NodeID, "expires", id.Leaf().NotAfter)
	case errors.Is(err, os.ErrNotExist):
		if len(cfg.Token) == 0 {
			return nil, ErrNeedToken
		}
		if len(s.managers) == 0 {
			return nil, errors.New("join: no manager address given (--manager)")
		}
		var errs []error
		for _, addr := range s.managers {
			jctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			id, more, err := join(jctx, cfg.StateDir, addr, cfg.Token, cfg.Description)
			cancel()
			if err != nil {
				errs = append(errs, err)
				continue
			}
			s.id = id
			s.addManagers(more)
			s.log.Info("joined the cluster", "node", id.NodeID, "manager", addr)
			break
		}
		if s.id == nil {
			return nil, fmt.Errorf("join: %w", errors.Join(errs...))
		}
	default:
		return nil, err
	}
	cfg.Cache.SetNodeID(s.id.NodeID)
	if err := saveManagers(cfg.StateDir, s.Managers()); err != nil {
		s.log.Warn("save manager list", "err", err)
	}
	return s, nil
}

// NodeID is the node's identity in the cluster.
func (s *Session) NodeID() string { return s.id.NodeID }

// Identity returns the node's credentials.
func (s *Session) Identity() *Identity { return s.id }

// Managers is every manager address the node knows.
func (s *Session) Managers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.managers)
}

// Connected reports whether a session stream is up.
func (s *Session) Connected() bool { return s.connected.Load() }

// Reconnects is how many times a session came up again after the first
// one since the agent started: each is a manager lost (or left) and a
// manager found.
func (s *Session) Reconnects() uint64 {
	if n := s.connects.Load(); n > 0 {
		return n - 1
	}
	return 0
}

func (s *Session) addManagers(addrs []string) {
	if len(addrs) == 0 {
		return
	}
	s.mu.Lock()
	merged := mergeAddrs(s.managers, addrs)
	s.mu.Unlock()
	s.setManagers(merged)
}

// setManagers replaces the known managers by what the cluster says (a
// session message lists every manager), keeping the command line's.
// A manager that left the cluster is thus forgotten.
func (s *Session) setManagers(addrs []string) {
	s.mu.Lock()
	changed := !slices.Equal(addrs, s.managers)
	s.managers = addrs
	s.mu.Unlock()
	if changed {
		if err := saveManagers(s.cfg.StateDir, addrs); err != nil {
			s.log.Warn("save manager list", "err", err)
		}
	}
}

func (s *Session) setConnected(addr string, up bool) {
	s.mu.Lock()
	if up {
		s.current = addr
	} else {
		s.current = ""
	}
	s.mu.Unlock()
	s.connected.Store(up)
	if up {
		s.connects.Add(1)
	}
	select {
	case s.stateCh <- up:
	default:
	}
}

// Run keeps a session stream up until ctx ends, trying the known managers
// in turn with jittered exponential backoff, and renews the certificate
// when due. It returns ctx's error.
func (s *Session) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.renewLoop(ctx)
	}()
	defer wg.Wait()

	// The reconnect policy is shared with the manager's storm benchmark
	// (api/dispatcher.Backoff): jittered, doubling, and quick to find a
	// manager that is back.
	backoff := dapi.Backoff{Min: s.cfg.MinBackoff, Max: s.cfg.MaxBackoff, MaxUnreached: s.cfg.MaxUnreachedBackoff}
	next := 0
	for {
		managers := s.Managers()
		if len(managers) == 0 {
			return errors.New("session: no manager address known")
		}
		addr := managers[next%len(managers)]
		next++
		delivered, reached, err := s.runOnce(ctx, addr)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if status.Code(err) == codes.PermissionDenied {
			// Not an outage: the cluster has removed this node or revoked
			// its certificate. What it holds is no longer its to serve.
			s.dropAll(err)
		}
		s.log.Warn("session with manager ended; grants held stay served", "manager", addr, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff.Next(delivered, reached)):
		}
	}
}

// dial returns a client for addr; reached, when not nil, is set once a TCP
// connection to addr is made (the reconnect policy tells a manager that
// is not there from one that failed).
func (s *Session) dial(addr string, reached *atomic.Bool) (*grpc.ClientConn, error) {
	dialer := dialScrubbed
	if reached != nil {
		dialer = func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := dialScrubbed(ctx, addr)
			if err == nil {
				reached.Store(true)
			}
			return c, err
		}
	}
	// Keepalive and fixed flow-control windows come from the API package,
	// which the manager's benchmarks dial with too.
	opts := append(dapi.Transport{}.DialOptions(),
		grpc.WithTransportCredentials(credentials.NewTLS(s.id.TLSConfig())),
		experimental.WithBufferPool(newZeroingPool()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(zeroingCodec{})),
		// No bufio buffer between TLS and the HTTP/2 framer: it would keep
		// a plaintext copy of the last frames read.
		grpc.WithReadBufferSize(0),
		grpc.WithContextDialer(dialer),
	)
	return grpc.NewClient(addr, opts...)
}

// runOnce holds one session with addr until it fails. delivered says
// whether at least one message was applied, reached whether a TCP
// connection to addr was made.
func (s *Session) runOnce(ctx context.Context, addr string) (delivered, reached bool, err error) {
	var tcp atomic.Bool
	// Every return reports whether TCP got through, whatever it says.
	defer func() { reached = tcp.Load() }()
	conn, err := s.dial(addr, &tcp)
	if err != nil {
		return false, false, err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Give up on a manager that does not connect and send the first
	// message in time: it may accept TCP and never answer.
	firstTimer := time.AfterFunc(s.cfg.FirstMessageTimeout, cancel)
	defer firstTimer.Stop()

	resume := s.cfg.Cache.Revision()
	if s.full.Load() {
		resume = 0
	}
	client := dapi.NewDispatcherClient(conn)
	stream, err := client.Session(ctx, &dapi.SessionRequest{Description: s.cfg.Description, ResumeRevision: resume, Features: dapi.AgentFeatures()})
	if err != nil {
		return false, false, err
	}
	hbDone := make(chan struct{})
	defer func() {
		cancel()
		if delivered {
			<-hbDone
			s.setConnected(addr, false)
		}
	}()
	for {
		msg, err := stream.Recv()
		if err != nil {
			return delivered, false, err
		}
		if id := msg.GetNodeId(); id != "" && id != s.id.NodeID {
			zeroSecrets(msg)
			return delivered, false, fmt.Errorf("manager %s speaks to node %s, this node is %s", addr, id, s.id.NodeID)
		}
		if p := msg.GetHeartbeatPeriodMs(); p > 0 {
			s.period.Store(int64(time.Duration(p) * time.Millisecond))
		}
		if ms := msg.GetManagers(); len(ms) > 0 {
			s.setManagers(mergeAddrs(ms, s.cfg.Managers))
		}
		if err := s.cfg.Cache.Apply(msg); err != nil {
			// Start over from a complete snapshot.
			s.full.Store(true)
			return delivered, false, fmt.Errorf("apply message from %s: %w", addr, err)
		}
		s.full.Store(false)
		s.log.Debug("applied", "manager", addr, "type", msg.GetType().String(), "revision", msg.GetRevision(), "changes", len(msg.GetChanges()))
		if !delivered {
			firstTimer.Stop()
			delivered = true
			s.setConnected(addr, true)
			s.log.Info("session with manager up", "manager", addr, "revision", msg.GetRevision(), "type", msg.GetType().String())
			go func() {
				defer close(hbDone)
				s.heartbeat(ctx, client)
			}()
		}
	}
}

// zeroSecrets clears the secret data of a message that is not applied (the
// cache zeroes the ones it applies).
func zeroSecrets(msg *dapi.SessionMessage) {
	for _, ch := range msg.GetChanges() {
		if sd := ch.GetAssignment().GetSecret(); sd != nil {
			clear(sd.Data)
		}
	}
}

// dropAll forgets every grant, zeroing the secrets' memory.
func (s *Session) dropAll(cause error) {
	if s.cfg.Cache.Revision() == 0 {
		return
	}
	if err := s.cfg.Cache.Apply(&dapi.SessionMessage{Type: dapi.SessionMessage_COMPLETE}); err != nil {
		s.log.Error("drop grants", "err", err)
		return
	}
	s.log.Error("the cluster refused this node; every grant it held is dropped", "node", s.id.NodeID, "cause", cause)
}

// heartbeat beats at the period the manager asks for until ctx ends. It
// runs once per session: its first beat carries the inventory
// (inventory.go).
func (s *Session) heartbeat(ctx context.Context, client dapi.DispatcherClient) {
	inv := inventoryDue{want: true}
	draining := false
	for {
		period := time.Duration(s.period.Load())
		if period <= 0 {
			period = 5 * time.Second
		}
		wait := period
		if draining {
			// More than a beat's worth is queued: the manager takes
			// ReportBeatsPerPeriod full beats a period.
			wait = period / dapi.ReportBeatsPerPeriod
		}
		select {
		case <-ctx.Done():
			return
		case <-s.after(wait):
		}
		hctx, cancel := context.WithTimeout(ctx, period)
		sent, dropped := s.reports.batch()
		if dropped > 0 {
			s.log.Warn("mount reports were dropped while no manager took them: the audit log misses them", "dropped", dropped)
			// A lost WIPED would leave its container listed by service
			// ps: the inventory corrects the rows.
			inv.want = true
		}
		// Taken after the batch, never before: see takeInventory.
		req := &dapi.HeartbeatRequest{Reports: sent, Inventory: s.takeInventory(&inv)}
		resp, err := client.Heartbeat(hctx, req)
		cancel()
		draining = false
		if s.settleInventory(&inv, req.Inventory, resp, err) {
			// Refused, maybe for the inventory: nothing of the beat was
			// recorded, and its reports go again.
			continue
		}
		if s.reports.done(sent, err) && err != nil {
			s.log.Warn("the manager refused mount reports; they are dropped", "reports", len(sent), "err", err)
			inv.want = true
		}
		if status.Code(err) == codes.ResourceExhausted {
			// Over this period's report budget: the reports stay queued
			// for the next period.
			s.log.Debug("the manager defers mount reports to the next period", "queued", s.reports.len())
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("heartbeat failed", "err", err)
			}
			continue
		}
		draining = len(sent) == dapi.MaxMountReports && s.reports.len() > 0
		if p := resp.GetPeriodMs(); p > 0 {
			s.period.Store(int64(time.Duration(p) * time.Millisecond))
		}
	}
}

// renewLoop renews the certificate at two thirds of its lifetime, retrying
// across managers until it succeeds or the certificate expires.
func (s *Session) renewLoop(ctx context.Context) {
	const retry = time.Minute
	for {
		wait := time.Until(renewAt(s.id.Leaf()))
		if wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-s.after(wait):
			}
		}
		if err := s.Renew(ctx); err != nil {
			s.log.Warn("certificate renewal failed; will retry", "err", err, "expires", s.id.Leaf().NotAfter)
			select {
			case <-ctx.Done():
				return
			case <-s.after(retry):
			}
			continue
		}
		s.log.Info("node certificate renewed", "node", s.id.NodeID, "expires", s.id.Leaf().NotAfter)
	}
}

// Renew gets a fresh certificate from the first manager that answers.
func (s *Session) Renew(ctx context.Context) error {
	var errs []error
	for _, addr := range s.Managers() {
		conn, err := s.dial(addr, nil)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err = s.id.renew(rctx, s.cfg.StateDir, conn)
		cancel()
		conn.Close()
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	return errors.Join(errs...)
}
