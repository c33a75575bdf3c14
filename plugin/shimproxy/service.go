package shimproxy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/lockbox-project/lockbox/plugin/claimrecord"
	"github.com/lockbox-project/lockbox/plugin/runtime/hotpath"
)

// sigkill is SIGKILL's number, which both inner shims take for a kill
// that cannot be caught (runhcs maps it to terminating the container).
const sigkill = 9

// platform is what differs between Linux and Windows around the inner
// create (platform_linux.go, platform_windows.go).
type platform interface {
	// beforeCreate runs before the inner create, with the agent
	// connected: it may rewrite the bundle's config.json, and may have the
	// agent prepare (then it records the claim first). An error fails the
	// create; what the agent holds is released from the record.
	beforeCreate(ctx context.Context, ag agentClient, c *hotpath.Claim, r *taskAPI.CreateTaskRequest) error
	// afterCreate runs after the inner create, before anything can start
	// the container. An error takes the container back.
	afterCreate(ctx context.Context, ag agentClient, c *hotpath.Claim, r *taskAPI.CreateTaskRequest, pid uint32) error
}

// Service is the proxy's task service: every call goes to the inner
// shim's task service, and Create, Delete and Shutdown do Lockbox's part
// around it. A claiming container's exit (a Wait on the inner shim)
// releases its secrets too.
type Service struct {
	taskAPI.TTRPCTaskService // the inner shim

	socket string
	dial   dialAgent
	plat   platform
	// shutdown ends the proxy's process (pkg/shim's shutdown service).
	shutdown func()

	// ctx ends the exit watches when the proxy shuts down.
	ctx    context.Context
	cancel context.CancelFunc
	watch  sync.WaitGroup

	mu sync.Mutex
	// tasks maps each container created through the proxy and not yet
	// deleted to its bundle: Shutdown ends the proxy only when none is
	// left, and Delete finds the record there.
	tasks map[string]string
	// relMu serialises releases, so that the exit watch and Delete never
	// release one record twice at once.
	relMu sync.Mutex
}

var _ taskAPI.TTRPCTaskService = (*Service)(nil)

// newService returns the proxy around inner. shutdown ends the proxy's
// process; nil in tests.
func newService(inner taskAPI.TTRPCTaskService, socket string, dial dialAgent, plat platform, shutdown func()) *Service {
	ctx, cancel := context.WithCancel(context.Background())
	if shutdown == nil {
		shutdown = func() {}
	}
	return &Service{TTRPCTaskService: inner, socket: socket, dial: dial, plat: plat, shutdown: shutdown,
		ctx: ctx, cancel: cancel, tasks: map[string]string{}}
}

// RegisterTTRPC registers the proxy as the shim's task service (version
// 3, which the proxy's bootstrap result announces).
func (s *Service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

// Create creates the container with the inner shim and, when it claims a
// service, has the agent give it its secrets before anything can start
// it. A claim that fails takes the container back (kill, wait, delete in
// the inner shim): it must not run without what it was promised, and left
// to containerd the cleanup hangs on the live init's stdio.
func (s *Service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	if err := checkOptions(r.Options); err != nil {
		return nil, fmt.Errorf("lockbox: container %s: %w", r.ID, err)
	}
	c, err := hotpath.ReadClaim(r.Bundle)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			// No readable config.json: the inner shim reports that better.
			return s.createInner(ctx, r)
		}
		return nil, fmt.Errorf("lockbox: container %s: %w", r.ID, err)
	}
	if c == nil {
		return s.createInner(ctx, r)
	}
	// The claim rules' containerd namespace: the one containerd's request
	// runs in.
	c.Facts.ContainerdNamespace = requestNamespace(ctx)
	fail := func(err error) error {
		return fmt.Errorf("lockbox: container %s claims service %q: %w", r.ID, c.Service, err)
	}
	// Connect first: on a node whose agent is down the create fails before
	// the inner shim builds a container only to take it back.
	ag, err := s.dial(s.socket)
	if err != nil {
		return nil, fail(fmt.Errorf("lockbox agent not reachable: %w", err))
	}
	defer ag.Close()
	if err := s.plat.beforeCreate(ctx, ag, c, r); err != nil {
		s.release(ctx, r.ID, r.Bundle, "failed claim")
		return nil, fail(err)
	}
	resp, err := s.createInner(ctx, r)
	if err != nil {
		s.release(ctx, r.ID, r.Bundle, "failed create")
		return nil, err
	}
	if err := s.plat.afterCreate(ctx, ag, c, r, resp.Pid); err != nil {
		s.takeBack(ctx, r.ID, r.Bundle)
		return nil, fail(err)
	}
	s.watchExit(r.ID, r.Bundle)
	return resp, nil
}

func (s *Service) createInner(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	resp, err := s.TTRPCTaskService.Create(ctx, r)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.tasks[r.ID] = r.Bundle
	s.mu.Unlock()
	return resp, nil
}

// watchExit releases the container's secrets when its init exits: the
// inner shim answers a Wait then. On Windows this is the only wipe at
// exit (the agent has no exit watch there); on Linux the agent's own
// watch wipes too, and the second release finds nothing.
func (s *Service) watchExit(id, bundle string) {
	s.watch.Add(1)
	go func() {
		defer s.watch.Done()
		if _, err := s.TTRPCTaskService.Wait(s.ctx, &taskAPI.WaitRequest{ID: id}); err != nil {
			// The proxy is shutting down, or the inner shim went away:
			// Delete, or the manager's Stop, releases then.
			log.G(s.ctx).WithError(err).WithField("id", id).Debug("lockbox: exit watch ended")
			return
		}
		s.release(s.ctx, id, bundle, "exit")
	}()
}

// takeBack kills, waits for and deletes a container whose claim failed,
// then releases whatever the agent may hold for it.
func (s *Service) takeBack(ctx context.Context, id, bundle string) {
	// The caller's context may be what failed the claim.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	killWaitDelete(ctx, s.TTRPCTaskService, id, "after failed claim")
	s.forget(id)
	s.release(ctx, id, bundle, "failed claim")
}

// killWaitDelete removes task id from the inner shim, logging what fails
// (a task already gone answers not found).
func killWaitDelete(ctx context.Context, inner taskAPI.TTRPCTaskService, id, why string) {
	lg := log.G(ctx).WithField("id", id)
	if _, err := inner.Kill(ctx, &taskAPI.KillRequest{ID: id, Signal: sigkill, All: true}); err != nil {
		lg.WithError(err).Debug("lockbox: kill container " + why)
	} else if _, err := inner.Wait(ctx, &taskAPI.WaitRequest{ID: id}); err != nil {
		lg.WithError(err).Warn("lockbox: wait for container " + why)
	}
	if _, err := inner.Delete(ctx, &taskAPI.DeleteRequest{ID: id}); err != nil {
		lg.WithError(err).Debug("lockbox: delete container " + why)
	}
}

// release has the agent wipe what it holds for the container recorded in
// bundle; a failure keeps the record for the next chance (Delete, then
// the manager's Stop).
func (s *Service) release(ctx context.Context, id, bundle, why string) {
	s.relMu.Lock()
	defer s.relMu.Unlock()
	if err := releaseFromDisk(context.WithoutCancel(ctx), s.dial, s.socket, bundle); err != nil {
		log.G(ctx).WithError(err).WithField("id", id).Warn("lockbox: release at " + why)
	}
}

// Delete deletes the container (or exec) in the inner shim, then has the
// agent wipe a claiming container's secrets. The release comes before the
// delete answers: containerd may reuse the ID only after that. A failed
// release does not fail the delete; the record stays for the manager's
// Stop to try again.
func (s *Service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	resp, err := s.TTRPCTaskService.Delete(ctx, r)
	if err != nil || r.ExecID != "" {
		return resp, err
	}
	s.release(ctx, r.ID, s.forget(r.ID), "delete")
	return resp, nil
}

// Shutdown ends the proxy, and the inner shim with it, once no container
// created through it is left; containerd asks after every delete.
func (s *Service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	n := len(s.tasks)
	s.mu.Unlock()
	if n > 0 {
		return &emptypb.Empty{}, nil
	}
	if _, err := s.TTRPCTaskService.Shutdown(ctx, r); err != nil && !errors.Is(err, ttrpc.ErrClosed) {
		// The inner shim exits while answering: a closed connection is
		// its yes.
		log.G(ctx).WithError(err).Debug("lockbox: inner shim shutdown")
	}
	s.cancel()
	s.shutdown()
	return &emptypb.Empty{}, nil
}

// forget returns the container's bundle and drops it from the map.
func (s *Service) forget(id string) string {
	s.mu.Lock()
	b, ok := s.tasks[id]
	delete(s.tasks, id)
	s.mu.Unlock()
	if ok {
		return b
	}
	return claimrecord.SiblingBundle(id)
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

// checkOptions refuses the generic runtime options containerd's CRI sends
// a runtime type it does not know (runtimeoptions.v1.Options: the
// handler's options table as TOML) when the handler has an options table.
// The proxy hands the inner shim the create's options as they are, and
// both runc's and runhcs' shims read them with an unchecked type
// assertion: they would panic. Without an options table CRI sends none,
// and ctr and the Go client send the inner shim's own type.
func checkOptions(a *anypb.Any) error {
	if a.MessageIs((*runtimeoptions.Options)(nil)) {
		return fmt.Errorf("runtime options of type %s: %s passes the inner shim only its own options type; leave the CRI runtime handler's options table out", a.GetTypeUrl(), RuntimeType)
	}
	return nil
}
