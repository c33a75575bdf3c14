//go:build linux

package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"

	"github.com/lockbox-project/lockbox/internal/agentsocket"
	"github.com/lockbox-project/lockbox/internal/steptrace"
	"github.com/lockbox-project/lockbox/linux"
	"github.com/lockbox-project/lockbox/mounter"
	"github.com/lockbox-project/lockbox/plugin/claimrecord"
	"github.com/lockbox-project/lockbox/plugin/runtime/agentconn"
	"github.com/lockbox-project/lockbox/plugin/runtime/hotpath"
)

// agentTimeout bounds each call to the agent.
const agentTimeout = 30 * time.Second

// cleanupTimeout bounds taking back a container whose claim failed.
const cleanupTimeout = 30 * time.Second

// service is the runc task service with claims: Create and Delete talk to
// the agent, every other call goes straight to the runc service.
//
// It talks to the agent with agentconn, lockbox-runtime's hand-encoded
// client, not agent/localapi's: every container gets a fresh shim process,
// and there the protobuf runtime's first use of the local API's messages
// (building their marshal tables) and the heap growth behind it cost about
// a millisecond of CPU on the claim's critical path, between runc's create
// and the agent's attach (BenchmarkShimPhases, docs/performance.md).
type service struct {
	taskAPI.TTRPCTaskService
	// socket is the agent's local API socket.
	socket string

	mu sync.Mutex
	// binds are the Binds of the containers created, by ID, until their
	// Delete (bind).
	binds map[string]*binding
	// bundles maps a container ID to its bundle, learnt at Create. Delete
	// falls back to containerd's layout (the shim's cwd is one bundle, the
	// others are its siblings).
	bundles map[string]string
	// trace is the phase benchmark's tracer (trace_linux.go), nil
	// otherwise.
	trace *steptrace.Tracer
}

func newService(inner taskAPI.TTRPCTaskService, socket string) *service {
	return &service{TTRPCTaskService: inner, socket: socket, bundles: map[string]string{}, binds: map[string]*binding{}, trace: processTracer}
}

// AgentSocket is the agent's socket as lockbox-runtime finds it:
// LOCKBOX_AGENT_SOCKET, else the agent's default socket.
func AgentSocket(getenv func(string) string) string {
	if s := getenv("LOCKBOX_AGENT_SOCKET"); s != "" {
		return s
	}
	return agentsocket.Default
}

// RegisterTTRPC registers the wrapper, not the runc service, as the task
// service.
func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

// Create creates the container with runc and, when it claims a service,
// attaches its secrets before anything can start it. The agent builds
// them while runc creates the container: it is asked before the create
// (api/agent PrepareRequest.before_create) and hands them over as
// detached mounts, which the shim attaches into the container's mount
// namespace by its init's pidfd once runc's create has returned. That
// leaves only the attach between runc's create and Create's answer (0.5
// ms, where the agent's Prepare round trip after the create took 1.7–1.9
// ms: BenchmarkShimPhases, docs/performance.md). The agent then learns
// the container's process from a Bind, whose answer Start waits for
// (bind). A claim that fails takes the container back: it must not run
// without what it was promised, and left to containerd the cleanup hangs
// on the live init's stdio.
func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	s.trace.Mark(r.ID, "create")
	defer s.trace.Mark(r.ID, "create-done")
	c, err := hotpath.ReadClaim(r.Bundle)
	s.trace.Mark(r.ID, "claim-read")
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			// No readable config.json: runc reports that better.
			return s.TTRPCTaskService.Create(ctx, r)
		}
		return nil, fmt.Errorf("lockbox: container %s: %w", r.ID, err)
	}
	if c == nil {
		s.trace.Mark(r.ID, "runc-create")
		return s.TTRPCTaskService.Create(ctx, r)
	}
	// The claim rules' containerd namespace: the one containerd's request
	// runs in (the runc task service creates the container in it too).
	c.Facts.ContainerdNamespace = requestNamespace(ctx)
	fail := func(err error) error {
		return fmt.Errorf("lockbox: container %s claims service %q: %w", r.ID, c.Service, err)
	}
	// Connect first: on a node whose agent is down the create fails before
	// runc builds a container only to take it back.
	cl, err := agentconn.Dial(s.socket, callTimeout(ctx))
	if err != nil {
		return nil, fail(fmt.Errorf("lockbox agent not reachable: %w", err))
	}
	// The connection is the Bind's once the container is attached.
	bound := false
	defer func() {
		if !bound {
			cl.Close()
		}
	}()
	s.trace.Mark(r.ID, "dialled")
	if c.NeedsMountpoints() {
		// After the create nobody can make the mountpoints (a read-only
		// root, a user namespace): runc must. A claim the agent could not
		// serve fails here, before runc builds anything.
		if err := addMountpoints(ctx, cl, c, r.ID); err != nil {
			return nil, fail(err)
		}
		s.trace.Mark(r.ID, "targets")
	}

	// Beside runc's create: the claim is recorded in the bundle, then the
	// agent builds the secrets and hands them over. The record is on disk
	// before the agent is asked for anything (recordClaim).
	early := make(chan handover, 1)
	go func() { early <- s.handover(cl, c, r) }()
	s.trace.Mark(r.ID, "runc-create")
	resp, err := s.TTRPCTaskService.Create(ctx, r)
	ho := <-early
	defer ho.close()
	if err != nil {
		s.createFailed(ctx, r, ho)
		return nil, err
	}
	s.trace.Mark(r.ID, "runc-created")
	s.mu.Lock()
	s.bundles[r.ID] = r.Bundle
	s.mu.Unlock()

	pid := int(resp.Pid)
	err = ho.err
	if err == nil {
		err = linux.AttachHandoversInto(pid, ho.hs)
		s.trace.Mark(r.ID, "attached")
	}
	if err != nil {
		s.takeBack(ctx, r.ID, r.Bundle, pid)
		return nil, fail(err)
	}
	s.bind(cl, r.ID, pid)
	bound = true
	return resp, nil
}

// handover is what the agent handed over before runc's create: the
// detached mounts and where each goes.
type handover struct {
	// recorded: the claim record is in the bundle (and the agent may hold
	// something for it).
	recorded bool
	hs       []mounter.Handover
	files    []*os.File
	err      error
}

// close closes the handed-over mounts: once attached, the container's
// mount namespace holds them; unattached, they go.
func (h handover) close() {
	for _, f := range h.files {
		f.Close()
	}
}

// handover records the claim in the bundle and has the agent build the
// secrets of a container runc is creating, and hand them over.
func (s *service) handover(cl *agentconn.Conn, c *hotpath.Claim, r *taskAPI.CreateTaskRequest) handover {
	if err := recordClaim(r.Bundle, r.ID, c.Service); err != nil {
		return handover{err: err}
	}
	s.trace.Mark(r.ID, "recorded")
	if s.trace != nil {
		cl.Received = func() { s.trace.Mark(r.ID, "answer-read") }
	}
	mounts, files, err := cl.PrepareBeforeCreate(c.Container(r.ID, 0, ""))
	s.trace.Mark(r.ID, "prepared")
	h := handover{recorded: true, files: files, err: err}
	if err != nil {
		return h
	}
	h.hs = make([]mounter.Handover, 0, len(mounts))
	for _, m := range mounts {
		i, ok := m.Fd(len(files))
		if !ok {
			h.err = fmt.Errorf("agent sent mount %s without its fd", m.Target)
			return h
		}
		h.hs = append(h.hs, mounter.Handover{Target: m.Target, File: files[i]})
	}
	return h
}

// createFailed cleans up after a runc create that failed while the agent
// was preparing: what the agent holds for the container is released (the
// claim record names it; a release that fails leaves the record for the
// shim manager's Stop), else the record goes.
func (s *service) createFailed(ctx context.Context, r *taskAPI.CreateTaskRequest, ho handover) {
	if !ho.recorded {
		claimrecord.Remove(r.Bundle)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if err := releaseFromDisk(ctx, s.socket, r.Bundle); err != nil {
		log.G(ctx).WithError(err).WithField("id", r.ID).Warn("lockbox: release after failed create")
	}
}

// binding is a container's Bind: sent at Create, its answer read once,
// by the container's Start (or dropped by its Delete).
type binding struct {
	mu  sync.Mutex
	cl  *agentconn.Conn
	err error
}

// bind has the agent learn the container's process (api/agent
// BindRequest) on cl without waiting for the answer: Start reads it
// (waitBound), so that no claiming container runs before the agent
// watches its process, which is what wipes its secrets when it exits. By
// then the answer is usually there: reading it costs no wait, and no
// thread of the shim sits blocked on it meanwhile.
func (s *service) bind(cl *agentconn.Conn, id string, pid int) {
	b := &binding{cl: cl}
	if err := cl.SendBind(id, pid); err != nil {
		b.cl, b.err = nil, err
		cl.Close()
	}
	s.trace.Mark(id, "bind-sent")
	s.mu.Lock()
	s.binds[id] = b
	s.mu.Unlock()
}

// answer reads the Bind's answer the first time, and returns it every
// time.
func (b *binding) answer() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cl != nil {
		b.err = b.cl.BindAnswer()
		b.cl.Close()
		b.cl = nil
	}
	return b.err
}

// drop closes the Bind's connection if its answer was never read.
func (b *binding) drop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cl != nil {
		b.cl.Close()
		b.cl = nil
		b.err = errors.New("container deleted before its start")
	}
}

// waitBound returns the container's Bind's answer, if it has a Bind,
// reading it from the agent when Start is the first to ask (within the
// connection's timeout, agentTimeout at most).
func (s *service) waitBound(id string) error {
	s.mu.Lock()
	b := s.binds[id]
	s.mu.Unlock()
	if b == nil {
		return nil
	}
	err := b.answer()
	s.trace.Mark(id, "bound")
	if err == nil {
		return nil
	}
	var ae *agentconn.Error
	if errors.As(err, &ae) && ae.Code == agentconn.Invalid && strings.Contains(ae.Message, "names no operation") {
		// An agent from before Bind reads it as an empty request.
		return fmt.Errorf("the lockbox agent is older than this shim and cannot watch a container prepared before its create: upgrade the agent (%w)", err)
	}
	return fmt.Errorf("the lockbox agent cannot watch the container, so nothing would wipe its secrets when it exits: %w", err)
}

// Start starts the container once the agent watches it (waitBound); an
// exec's start goes straight to runc.
//
// A container the agent cannot watch is killed before the error returns:
// its secrets are attached already, nothing would wipe them at its exit,
// and left created it would keep them (and take execs) until its client
// deletes it, which a client that lost the agent may never do. Killing
// its init takes its mount namespace, and the secrets with it, down now;
// the client's delete finds a stopped task.
func (s *service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	if r.ExecID == "" {
		if err := s.waitBound(r.ID); err != nil {
			s.killUnwatched(ctx, r.ID)
			return nil, fmt.Errorf("lockbox: container %s: %w", r.ID, err)
		}
	}
	return s.TTRPCTaskService.Start(ctx, r)
}

// killUnwatched kills a created container whose Bind failed and waits for
// its init, so that its secrets are gone when Start's error returns.
func (s *service) killUnwatched(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	s.killAndWait(ctx, id, "the container the agent cannot watch")
}

// killAndWait kills every process of container id and waits for its init;
// what fails is logged, what is the container says.
func (s *service) killAndWait(ctx context.Context, id, what string) {
	lg := log.G(ctx).WithField("id", id)
	if _, err := s.TTRPCTaskService.Kill(ctx, &taskAPI.KillRequest{ID: id, Signal: uint32(syscall.SIGKILL), All: true}); err != nil {
		lg.WithError(err).Warn("lockbox: kill " + what)
	} else if _, err := s.TTRPCTaskService.Wait(ctx, &taskAPI.WaitRequest{ID: id}); err != nil {
		lg.WithError(err).Warn("lockbox: wait for " + what)
	}
}

// recordClaim records a claim in the container's bundle, before the agent
// holds anything for it, so that a shim that dies after asking still
// leaves its manager's Stop (a separate process) what to release. It is
// written beside runc's create (about 0.2 ms of file work off the claim's
// path, BenchmarkShimPhases), so it cannot name the container's init: it
// need not. Every release the shim sends from it comes after the
// container has been deleted (Delete, after runc's delete; Stop, after the
// runc manager's forced delete; takeBack, after its kill, wait and delete),
// and the agent wipes the mount of a holder that has ended whatever the
// release names. A release naming no process never wipes a holder that
// still runs (agent.ReleaseRequest): not this container if a forced delete
// failed (its exit wipes it), nor another namespace's container holding
// the same ID.
func recordClaim(bundle, id, service string) error {
	return claimrecord.Write(bundle, claimrecord.Record{ID: id, Service: service})
}

// addMountpoints asks the agent for the claim's targets and adds a
// mountpoint bind for each to the bundle's config.json.
func addMountpoints(ctx context.Context, cl *agentconn.Conn, c *hotpath.Claim, id string) error {
	targets, err := cl.Targets(c.Container(id, 0, ""))
	if err != nil {
		return err
	}
	if len(targets) == 0 {
		return nil
	}
	if err := c.AddMountpoints(targets); err != nil {
		return err
	}
	return c.WriteSpec()
}

// takeBack kills, waits for and deletes a container whose claim failed,
// then releases whatever the agent may hold for it, naming its init pid:
// if the kill or the delete failed, the container may still run, and the
// release must still wipe what the agent attached there.
func (s *service) takeBack(ctx context.Context, id, bundle string, pid int) {
	// The caller's context may be what failed the claim.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	lg := log.G(ctx).WithField("id", id)
	s.killAndWait(ctx, id, "container after failed claim")
	if _, err := s.TTRPCTaskService.Delete(ctx, &taskAPI.DeleteRequest{ID: id}); err != nil {
		lg.WithError(err).Warn("lockbox: delete container after failed claim")
	}
	s.forget(id)
	r, err := readyFromDisk(ctx, s.socket, bundle)
	if err == nil && r != nil {
		if r.rec.Pid == 0 {
			// The agent reads the start time of the process now.
			r.rec.Pid = int32(pid)
		}
		err = r.send(bundle)
	}
	if err != nil {
		lg.WithError(err).Warn("lockbox: release after failed claim")
	}
}

// Delete deletes the container (or exec) with runc, then has the agent
// release a claiming container's secrets. The release is written to the
// agent before the delete answers, but not waited for (post, a release
// with no_reply): the agent's records, its exit watch and its restart
// recovery guarantee the wipe, the release only makes it prompt, and its
// round trip (two process wake-ups, 0.5 ms of the delete's path,
// BenchmarkShimPhases) bought nothing the delete needs. containerd may
// reuse the ID once the delete answers: a Prepare reusing it that reaches
// the agent before the release finds the old holder ended and wipes it
// itself (agent causeReuse), and the late release then names a holder that
// runs and leaves it alone (agent.ReleaseRequest). The agent wipes as soon
// as it has taken the container (its lock held, the init's exit confirmed
// by a pidfd; agent/release.go). A release that cannot be written (no
// agent, an agent gone since the dial) does not fail the delete; the
// record stays for the manager's Stop to try again. The agent's own exit
// watch wipes too, but only exitDrain (300 ms) after the init's exit, when
// its stdout pipe may no longer hold the secret files' pages: a delete
// usually comes first.
//
// The delete path needs no such drain: by the time runc's delete returns,
// the container's stdio pipes have been read to EOF. containerd v2.4.2's
// runc shim waits for its pipe copies before it deletes
// (cmd/containerd-shim-runc-v2/process/init.go, Init.delete:
// waitTimeout(ctx, &p.wg, 10*time.Second); process/io.go, copyPipes:
// wg.Done once io.CopyBuffer has returned), and its client drains the
// task's IO before asking (client/task.go, task.Delete: t.io.Wait()). A
// pipe still held open by a process outside the container past those 10 s
// is the one case the wipe may zero pages a reader has not copied yet.
//
// Two earlier starts of the release were tried and measured
// (BenchmarkShimPhases, docs/performance.md): at the init's exit it ran
// beside containerd's handling of the exit and delayed the client's exit
// event by about what it saved here (and it would have wiped before the
// output was drained); the whole release (its wipe included) beside
// runc's delete slowed runc's delete more than it saved. On a loaded
// machine neither beat this order. Only the release's record read and the
// agent's dial run beside runc's delete (earlyRelease: little CPU, most of
// it waiting on the agent's accept); the Release itself is written only
// once runc's delete has succeeded.
func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	s.trace.Mark(r.ID, "delete")
	if r.ExecID != "" {
		return s.TTRPCTaskService.Delete(ctx, r)
	}
	early := startRelease(ctx, s.socket, s.bundleOf(r.ID))
	resp, err := s.TTRPCTaskService.Delete(ctx, r)
	if err != nil {
		early.abandon()
		return resp, err
	}
	s.trace.Mark(r.ID, "runc-deleted")
	defer s.trace.Mark(r.ID, "delete-done")
	s.forget(r.ID)
	var mark func(string)
	if s.trace != nil {
		mark = func(step string) { s.trace.Mark(r.ID, step) }
	}
	if err := early.finish(mark); err != nil {
		log.G(ctx).WithError(err).WithField("id", r.ID).Warn("lockbox: release")
	}
	return resp, nil
}

// bundleOf returns the container's bundle: the one Create learnt, else
// containerd's layout.
func (s *service) bundleOf(id string) string {
	s.mu.Lock()
	b, ok := s.bundles[id]
	s.mu.Unlock()
	if ok {
		return b
	}
	return claimrecord.SiblingBundle(id)
}

// forget returns the container's bundle and drops it from the map.
func (s *service) forget(id string) string {
	b := s.bundleOf(id)
	s.mu.Lock()
	delete(s.bundles, id)
	bd := s.binds[id]
	delete(s.binds, id)
	s.mu.Unlock()
	if bd != nil {
		bd.drop()
	}
	return b
}

// callTimeout bounds each call on an agent connection: agentTimeout, or
// less when ctx ends sooner. agentconn's calls block in the kernel with
// socket timeouts; they do not watch ctx.
func callTimeout(ctx context.Context) time.Duration {
	d := agentTimeout
	if dl, ok := ctx.Deadline(); ok {
		// At least a millisecond: zero would mean no limit at all.
		d = max(min(d, time.Until(dl)), time.Millisecond)
	}
	return d
}

// requestNamespace is the containerd namespace of a task request, "" when
// it carries none (then no containerd.namespace rule holds).
func requestNamespace(ctx context.Context) string {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return ""
	}
	return ns
}

// taskService is the runc task service as task.NewTaskService returns it.
type taskService = taskAPI.TTRPCTaskService

// ttrpcInterceptor is the TTRPC server interceptor type.
type ttrpcInterceptor = ttrpc.UnaryServerInterceptor
