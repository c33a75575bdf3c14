package dispatcher

import (
	"context"
	"net"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/store"
	"github.com/lockbox-project/lockbox/pki"
)

// session is one connected node. Its view is owned by the dispatcher
// (under Dispatcher.mu); pending is filled by fan-out and drained by the
// stream's goroutine.
type session struct {
	nodeID string
	// caps is what the node's agent announced it enforces: part of the
	// placement of every view the session gets (service.placedOn).
	caps caps
	view view

	mu      sync.Mutex
	pending []item
	rev     int64
	err     error
	wake    chan struct{} // capacity 1
	done    chan struct{}
	ended   bool
	// announce asks for a message even without changes: the manager list
	// changed.
	announce bool
	// spare is the emptied queue of the last send, reused by push.
	spare []item

	// Used only by the session's own goroutine (send): the message it
	// fills for each send and its encoded header fields.
	msg           encodedMessage
	head          mem.Buffer
	headManagers  []string
	headHeartbeat uint32
}

func newSession(nodeID string, c caps) *session {
	return &session{nodeID: nodeID, caps: c, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// maxPending bounds what a session may have queued: a node that reads
// slower than changes arrive is cut off and resumes (or starts over) when
// it reconnects, rather than growing the manager's memory without end.
const maxPending = 4096

func (s *session) push(rev int64, items []item) {
	s.mu.Lock()
	if !s.ended && len(s.pending)+len(items) > maxPending {
		s.ended, s.err = true, status.Error(codes.ResourceExhausted, "this node fell too far behind; reconnect to resume")
		close(s.done)
	}
	if s.ended {
		s.mu.Unlock()
		for _, it := range items {
			it.release()
		}
		return
	}
	if s.pending == nil {
		s.pending, s.spare = s.spare, nil
	}
	s.pending = append(s.pending, items...)
	s.rev = rev
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *session) end(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	s.ended, s.err = true, err
	close(s.done)
}

// poke asks for a message with no changes (new manager list).
func (s *session) poke() {
	s.mu.Lock()
	s.announce = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// take returns what is queued, and whether a message is due even if
// nothing is.
func (s *session) take() ([]item, int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	items, announce := s.pending, s.announce
	s.pending, s.announce = nil, false
	return items, s.rev, announce
}

// recycle keeps the queue send emptied for the next push: a session then
// allocates no new queue for each message.
func (s *session) recycle(items []item) {
	if cap(items) == 0 || cap(items) > 64 {
		return
	}
	clear(items)
	s.mu.Lock()
	if s.spare == nil && !s.ended {
		s.spare = items[:0]
	}
	s.mu.Unlock()
}

// drop releases queued data of a session that is gone.
func (s *session) drop() {
	s.mu.Lock()
	s.ended = true
	items := s.pending
	s.pending = nil
	s.mu.Unlock()
	for _, it := range items {
		it.release()
	}
}

// Sender is the stream a session writes to: the gRPC server stream, whose
// server must use Codec, since messages are sent pre-encoded.
type Sender interface {
	Context() context.Context
	SendMsg(m any) error
}

// Session implements the Dispatcher RPC.
func (d *Dispatcher) Session(req *dapi.SessionRequest, stream dapi.Dispatcher_SessionServer) error {
	who, err := pki.PeerIdentity(stream.Context())
	if err != nil || (who.Role != pki.RoleWorker && who.Role != pki.RoleManager) {
		return status.Error(codes.PermissionDenied, "a session needs a node certificate")
	}
	addr := ""
	if p, ok := peer.FromContext(stream.Context()); ok {
		if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
			addr = host
		}
	}
	ctx := stream.Context()
	c := capsOf(req)
	// A bounded number of sessions start at once (startSlots).
	select {
	case d.starting <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	var s *session
	var first firstMessage
	err = onOwnStack(func() error {
		defer func() { <-d.starting }()
		rev, err := d.markReady(ctx, who.NodeID, req.GetDescription(), addr, c)
		if err != nil {
			return err
		}
		if !c.claimRules {
			// Once per session; names only what the agent said of
			// itself (quoted by slog), never a service or secret.
			d.log.Warn("node's agent does not announce claim-rule enforcement; services with claim rules are withheld from it until it is upgraded",
				"node", who.NodeID, "agent_version", logCut(req.GetDescription().GetAgentVersion()))
		}
		// A node that just joined can connect before the watch has
		// brought its registration into the index; it must not be told
		// it was removed. The node exists in the store at rev: wait for
		// the index.
		if !d.nodeKnown(who.NodeID) {
			wctx, cancel := context.WithTimeout(ctx, indexWait)
			err := d.WaitIndexed(wctx, rev)
			cancel()
			if err != nil {
				return status.Errorf(codes.Unavailable, "node %s is not indexed yet; retry: %v", who.NodeID, err)
			}
		}
		s, first, err = d.start(ctx, who.NodeID, req.GetResumeRevision(), c)
		return err
	})
	if err != nil {
		return err
	}
	return d.serve(stream, s, first)
}

// onOwnStack runs fn on a goroutine of its own and waits for it. A
// session's goroutine lives as long as its node stays connected and keeps
// the largest stack it ever grew; the etcd reads and writes of a session's
// start need a deep one, its sends a shallow one. Run apart, the deep
// stack is freed (and reused by the next session's start) instead of being
// held by every idle session (docs/performance.md: memory per agent).
func onOwnStack(fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	return <-done
}

// startSlots bounds the sessions that start at once: their node's
// "ready" write, the first message's reads and its encoding. A reconnect
// storm otherwise puts thousands of writes and linearizable reads into
// etcd at once; each read waits until etcd has applied every write before
// it, every session waits for the whole burst, and agents give up on
// their first message (30 s) and dial again, adding to the burst: the
// storm collapsed (docs/performance.md, "Reconnect storm"). Admitted in
// order, each start takes milliseconds and etcd still gets enough at once
// to batch its commits. A session whose agent hangs up while it waits
// leaves the queue.
const startSlots = 128

// indexWait bounds how long a session waits for the index to catch up
// with its own node's registration.
const indexWait = 10 * time.Second

// markReady records the node as ready and returns the store revision of
// that write. What the session says about the node is not trusted for
// placement: the hostname and platform stay those the node joined with
// (any holder of a worker token could otherwise report another node's
// hostname and be handed that node's grants). A session that reports
// others keeps being served; the difference is logged and kept apart in
// Node.Reported for operators. The agent version and warnings, which no
// constraint reads, follow the session when they are valid; to the
// warnings the manager adds its own about what the session's agent does
// not enforce (c.warning), so that `lockbox node inspect` shows why a
// service is withheld.
func (d *Dispatcher) markReady(ctx context.Context, nodeID string, desc *types.NodeDescription, addr string, c caps) (int64, error) {
	now := timestamppb.Now()
	var reported *types.NodeDescription
	n, err := d.cfg.Store.UpdateNode(ctx, nodeID, func(n *types.Node) error {
		reported = reportedDescription(n.Description, desc)
		n.Reported = reported
		if n.Description == nil {
			n.Description = &types.NodeDescription{}
		}
		warnings := n.Description.Warnings
		if desc != nil && store.ValidateNodeDescription(&types.NodeDescription{AgentVersion: desc.AgentVersion, Warnings: desc.Warnings}) == nil {
			n.Description.AgentVersion = desc.AgentVersion
			warnings = desc.Warnings
		}
		n.Description.Warnings = sessionWarnings(warnings, c)
		n.State = types.NodeState_NODE_STATE_READY
		n.LastSeen = now
		if addr != "" {
			n.Addr = addr
		}
		return nil
	})
	if err != nil {
		if isNotFound(err) {
			return 0, status.Errorf(codes.PermissionDenied, "node %s is not part of the cluster (removed?)", nodeID)
		}
		return 0, status.Errorf(codes.Unavailable, "record node %s: %v", nodeID, err)
	}
	if reported != nil {
		// Attributes go through slog's quoting: nothing the node sent can
		// reach a terminal raw.
		d.log.Warn("node reports a hostname or platform other than the one it joined with; placement keeps the joined one",
			"node", nodeID,
			"joined_hostname", n.GetDescription().GetHostname(),
			"reported_hostname", logCut(desc.GetHostname()),
			"joined_platform", n.GetDescription().GetPlatform().GetOs()+"/"+n.GetDescription().GetPlatform().GetArchitecture(),
			"reported_platform", logCut(desc.GetPlatform().GetOs()+"/"+desc.GetPlatform().GetArchitecture()))
	}
	d.hb.beat(nodeID, now.AsTime())
	return int64(n.GetMeta().GetVersion()), nil
}

// logCut bounds what a node chose that goes into a log line (slog quotes
// it; this keeps it short).
func logCut(s string) string {
	const max = 256
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// reportedDescription is what goes into Node.Reported: nil when the
// session agrees with the join (or says nothing), the reported hostname
// and platform when they differ, and a note instead of them when they
// break the description rules (they are never stored raw).
func reportedDescription(joined, session *types.NodeDescription) *types.NodeDescription {
	if session == nil {
		return nil
	}
	// A field the session leaves out claims nothing.
	r := &types.NodeDescription{Hostname: session.GetHostname(), Platform: joined.GetPlatform()}
	if r.Hostname == "" {
		r.Hostname = joined.GetHostname()
	}
	if p := session.GetPlatform(); p != nil {
		r.Platform = &types.Platform{Os: p.GetOs(), Architecture: p.GetArchitecture()}
	}
	if store.SamePlacementDescription(joined, r) {
		return nil
	}
	if err := store.ValidatePlacementDescription(r); err != nil {
		return &types.NodeDescription{Warnings: []string{"the session reported a description that is not valid: " + err.Error()}}
	}
	return r
}

// Serve runs the session of nodeID, as req asks (resume revision,
// announced features), on stream: the first message, then every change,
// until the stream or the session ends. The node must have been
// authenticated by the caller.
func (d *Dispatcher) Serve(stream Sender, nodeID string, req *dapi.SessionRequest) error {
	var s *session
	var first firstMessage
	err := onOwnStack(func() (err error) {
		s, first, err = d.start(stream.Context(), nodeID, req.GetResumeRevision(), capsOf(req))
		return err
	})
	if err != nil {
		return err
	}
	return d.serve(stream, s, first)
}

// start waits for the index and attaches the session of nodeID, whose
// agent announced c.
func (d *Dispatcher) start(ctx context.Context, nodeID string, resume uint64, c caps) (*session, firstMessage, error) {
	select {
	case <-d.ready:
	case <-ctx.Done():
		return nil, firstMessage{}, ctx.Err()
	}
	return d.attach(ctx, nodeID, int64(resume), c)
}

// serve sends s's first message and then every change, until the stream
// or the session ends.
func (d *Dispatcher) serve(stream Sender, s *session, first firstMessage) (err error) {
	ctx := stream.Context()
	nodeID := s.nodeID
	sendFailed := false
	defer func() {
		reason := closeReason(err, ctx.Err())
		if sendFailed && ctx.Err() == nil {
			reason = reasonSendFailed
		}
		d.metrics.closed.WithLabelValues(reason).Inc()
		d.mu.Lock()
		if d.sessions[nodeID] == s {
			delete(d.sessions, nodeID)
		}
		d.mu.Unlock()
		s.drop()
	}()
	if err := d.send(stream, s, first.typ, first.rev, first.items); err != nil {
		sendFailed = true
		return err
	}
	s.mu.Lock()
	if s.rev == 0 {
		s.rev = first.rev
	}
	s.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return s.err
		case <-s.wake:
		}
		items, rev, announce := s.take()
		if len(items) == 0 && !announce {
			continue
		}
		if err := d.send(stream, s, dapi.SessionMessage_INCREMENTAL, rev, items); err != nil {
			sendFailed = true
			return err
		}
		s.recycle(items)
	}
}

// send sends items as one message and drops their references (gRPC holds
// its own until the bytes are written). It runs on the session's own
// goroutine, the only user of s.msg and s.head: a send allocates nothing
// of its own but the list of parts Codec hands to gRPC.
func (d *Dispatcher) send(stream Sender, s *session, typ dapi.SessionMessage_Type, rev int64, items []item) error {
	m := &s.msg
	m.rev = rev
	m.revHead = d.revHeader(typ, rev)
	m.sessHead = s.header(uint32(d.cfg.HeartbeatPeriod.Milliseconds()), d.cfg.Managers())
	for _, it := range items {
		m.changes = append(m.changes, it.change)
	}
	err := stream.SendMsg(m)
	clear(m.changes)
	m.changes = m.changes[:0]
	for _, it := range items {
		it.release()
	}
	if err == nil {
		d.metrics.sent(typ, len(items))
	}
	return err
}

// revHead is the encoded type and revision of the messages of one
// fan-out, shared by every session that sends them.
type revHead struct {
	typ dapi.SessionMessage_Type
	rev int64
	buf mem.Buffer
}

// revHeader returns the encoding of typ and rev, from the last one made
// when it matches (every session of a fan-out sends the same pair).
func (d *Dispatcher) revHeader(typ dapi.SessionMessage_Type, rev int64) mem.Buffer {
	if h := d.lastRevHead.Load(); h != nil && h.typ == typ && h.rev == rev {
		return h.buf
	}
	h := &revHead{typ: typ, rev: rev, buf: revHeader(typ, rev)}
	d.lastRevHead.Store(h)
	return h.buf
}

// header returns the session's own header fields, encoded again only when
// the manager list changes.
func (s *session) header(heartbeatMS uint32, managers []string) mem.Buffer {
	if s.head == nil || s.headHeartbeat != heartbeatMS || !slices.Equal(s.headManagers, managers) {
		s.headManagers = slices.Clone(managers)
		s.headHeartbeat = heartbeatMS
		s.head = sessionHeader(s.nodeID, heartbeatMS, managers)
	}
	return s.head
}

type firstMessage struct {
	typ   dapi.SessionMessage_Type
	rev   int64
	items []item
}

// attach registers a session for nodeID, whose agent announced c,
// replacing an older one, and computes its first message. The past view of
// a resume is computed with c too: the agent announces what its build
// enforces, the same on every session of one agent process, and a resume
// comes from the same process (the grant cache lives in memory only).
func (d *Dispatcher) attach(ctx context.Context, nodeID string, resume int64, c caps) (*session, firstMessage, error) {
	// Read the past outside the lock; it is checked against the index
	// revision below.
	var past view
	pastOK := false
	if resume > 0 && d.cfg.History != nil {
		svcs, n, ok, err := d.cfg.History.ViewInputsAt(ctx, resume, nodeID)
		if err == nil && ok && n != nil {
			ss := make(map[string]*service, len(svcs))
			for _, s := range svcs {
				ss[s.Id] = newService(s)
			}
			past, pastOK = viewOf(ss, n, c), true
		}
	}

	d.mu.Lock()
	n := d.ix.nodes[nodeID]
	if n == nil {
		d.mu.Unlock()
		return nil, firstMessage{}, status.Errorf(codes.PermissionDenied, "node %s is not part of the cluster (removed?)", nodeID)
	}
	s := newSession(nodeID, c)
	s.view = d.intern(viewOf(d.ix.services, n, c))
	// Views are replaced by fan-out, never changed in place: this one
	// stays valid after the lock is released.
	cur := s.view
	rev := d.ix.rev
	old := d.sessions[nodeID]
	d.sessions[nodeID] = s
	d.mu.Unlock()
	if old != nil {
		old.end(status.Error(codes.Aborted, "a newer session of this node replaced this one"))
	}
	d.grants.note(nodeID, cur)

	fm := firstMessage{typ: dapi.SessionMessage_COMPLETE, rev: rev}
	var items []item
	var err error
	if pastOK && resume <= rev {
		fm.typ = dapi.SessionMessage_INCREMENTAL
		items, err = d.readChanges(ctx, diff(past, cur))
	} else {
		// Shared by every session attaching with the same view (first.go).
		items, err = d.completeFor(ctx, cur)
	}
	if err != nil {
		d.EndSession(nodeID, nil)
		return nil, firstMessage{}, status.Error(codes.Unavailable, err.Error())
	}
	fm.items = items
	return s, fm, nil
}

// readChanges reads the secrets cs adds and encodes cs: one store read and
// unseal per secret, the plaintext zeroed once encoded.
func (d *Dispatcher) readChanges(ctx context.Context, cs []change) ([]item, error) {
	var ids []string
	for _, c := range cs {
		if !c.remove && c.secretID != "" {
			ids = append(ids, c.secretID)
		}
	}
	data, err := d.readSecrets(ctx, ids)
	defer func() {
		for _, b := range data {
			clear(b)
		}
	}()
	if err != nil {
		return nil, err
	}
	return buildChanges(cs, data)
}

// maxParallelReads bounds the store reads one first message makes at once.
const maxParallelReads = 16

// readSecrets reads the data of ids, at most maxParallelReads at a time.
// In parallel because each is a linearizable etcd read: during a
// reconnect storm each waits until etcd has applied every write before it
// (thousands of nodes' "ready" writes), and ten in a row waited ten times.
// On error the data read so far is returned too, for the caller to zero.
func (d *Dispatcher) readSecrets(ctx context.Context, ids []string) (map[string][]byte, error) {
	data := make(map[string][]byte, len(ids))
	if len(ids) == 0 {
		return data, nil
	}
	type result struct {
		id  string
		b   []byte
		err error
	}
	out := make(chan result, len(ids))
	sem := make(chan struct{}, maxParallelReads)
	for _, id := range ids {
		go func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			b, err := d.cfg.Store.SecretData(ctx, id)
			out <- result{id, b, err}
		}()
	}
	var first error
	for range ids {
		r := <-out
		if r.err != nil {
			if first == nil {
				first = &secretReadError{id: r.id, err: r.err}
			}
			continue
		}
		data[r.id] = r.b
	}
	return data, first
}

func (d *Dispatcher) nodeKnown(nodeID string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ix != nil && d.ix.nodes[nodeID] != nil
}
