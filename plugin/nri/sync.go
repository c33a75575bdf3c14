package nri

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/containerd/nri/pkg/api"
)

// AwayReason is why a claiming container is evicted at Synchronize: it
// went through CreateContainer (or was created without the plugin) but
// started while the plugin was not connected, so StartContainer never ran
// and its mountpoint files are empty.
const AwayReason = "started while the Lockbox NRI plugin was away: its secrets were never attached"

// Retry bounds of the reconcile after a Synchronize that could not reach
// the agent.
const (
	minSyncRetry = 200 * time.Millisecond
	maxSyncRetry = 10 * time.Second
)

// errNotRunning is evictContainer's answer for a container whose process
// is gone (it exited since the runtime listed it): nothing to evict.
var errNotRunning = errors.New("container no longer running")

// syncer is the state Synchronize's reconcile keeps between requests.
type syncer struct {
	mu sync.Mutex
	// gen counts Synchronize calls: the retry of an older one stops,
	// since a newer snapshot (after a reconnect) supersedes it.
	gen uint64
	// life is the plugin's Run context: a retry stops with it.
	life context.Context
	log  *slog.Logger
	// evict stops a container; evictContainer (sync_linux.go) outside
	// tests.
	evict    func(procRoot string, c *api.Container) error
	minRetry time.Duration
	// retries counts the running retries (tests wait for them to end).
	retries sync.WaitGroup
}

func newSyncer() *syncer {
	return &syncer{life: context.Background(), evict: evictContainer, minRetry: minSyncRetry}
}

func (s *syncer) logger() *slog.Logger {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil {
		return slog.Default()
	}
	return s.log
}

// SetLogger sets where the plugin logs what it does on its own (an
// eviction, an agent it could not reach at Synchronize); slog's default
// logger otherwise.
func (p *Plugin) SetLogger(l *slog.Logger) {
	p.sync.mu.Lock()
	p.sync.log = l
	p.sync.mu.Unlock()
}

// setLife bounds the retries of a Synchronize by the plugin's Run.
func (p *Plugin) setLife(ctx context.Context) {
	p.sync.mu.Lock()
	p.sync.life = ctx
	p.sync.mu.Unlock()
}

// snapshot is what a Synchronize learnt from the runtime and must settle
// with the agent.
type snapshot struct {
	// stopped are the claiming containers no longer running: the agent
	// wipes what it still holds for them.
	stopped map[string]bool
	// started are the claiming containers running (or paused): each must
	// be one the agent holds, else it runs without its secrets.
	started []startedClaim
}

type startedClaim struct {
	ctr     *api.Container
	service string
}

// synchronize rebuilds the claim set from the runtime's containers, then
// settles it with the agent (reconcile). A created container is left
// alone: containerd blocks the plugins' Synchronize for the whole of a
// CRI start, from NRI's StartContainer to the task running, so one that
// is still created at Synchronize will pass through this plugin's
// StartContainer, which attaches its secrets or fails it.
//
// An agent that cannot be reached does not fail the Synchronize: that
// would disconnect the plugin, and then every claiming container whose pod
// does not require the plugin would start without it. Nor does it evict
// what the agent could not vouch for (a down agent would take every
// claiming container of the node with it). The reconcile is retried, with
// backoff, until the agent answers, the plugin stops or a newer
// Synchronize supersedes it.
func (p *Plugin) synchronize(ctx context.Context, pods []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
	podByID := make(map[string]*api.PodSandbox, len(pods))
	for _, pod := range pods {
		podByID[pod.GetId()] = pod
	}
	claims := map[string]string{}
	snap := snapshot{stopped: map[string]bool{}}
	for _, c := range ctrs {
		svc, ok := service(podByID[c.GetPodSandboxId()], c)
		if !ok {
			continue
		}
		switch c.GetState() {
		case api.ContainerState_CONTAINER_RUNNING, api.ContainerState_CONTAINER_PAUSED:
			claims[c.GetId()] = svc
			snap.started = append(snap.started, startedClaim{ctr: c, service: svc})
		case api.ContainerState_CONTAINER_CREATED:
			claims[c.GetId()] = svc
		default:
			snap.stopped[c.GetId()] = true
		}
	}
	p.mu.Lock()
	p.claims = claims
	p.mu.Unlock()
	defer p.syncedOnce.Do(func() { close(p.synced) })

	p.sync.mu.Lock()
	p.sync.gen++
	gen, life := p.sync.gen, p.sync.life
	p.sync.mu.Unlock()
	if err := p.reconcile(ctx, snap); err != nil {
		p.sync.logger().Error("nri: the agent cannot be reached at synchronize; no container evicted, retrying",
			"err", err, "claiming", len(snap.started))
		p.sync.retries.Add(1)
		go func() {
			defer p.sync.retries.Done()
			p.retryReconcile(life, gen, snap)
		}()
	}
	return nil, nil
}

// reconcile has the agent wipe what it holds for stopped claiming
// containers and evicts every started claiming container it does not
// hold. It fails only when the agent's list cannot be had.
func (p *Plugin) reconcile(ctx context.Context, snap snapshot) error {
	held, err := p.agent.List(ctx)
	if err != nil {
		return fmt.Errorf("list agent mounts: %w", err)
	}
	holds := make(map[string]bool, len(held.GetContainers()))
	for _, m := range held.GetContainers() {
		holds[m.GetId()] = true
		if snap.stopped[m.GetId()] {
			// Left held, the agent's reaper wipes it later: not a reason
			// to drop the connection.
			if err := p.agent.Release(ctx, m.GetId()); err != nil {
				p.sync.logger().Warn("nri: release a stopped container", "container", m.GetId(), "err", err)
			}
		}
	}
	for _, sc := range snap.started {
		if holds[sc.ctr.GetId()] {
			continue
		}
		log := p.sync.logger().With("container", sc.ctr.GetName(), "id", sc.ctr.GetId(), "service", sc.service)
		err := p.sync.evict(p.procRoot, sc.ctr)
		if errors.Is(err, errNotRunning) {
			log.Info("nri: claiming container without its secrets exited before its eviction")
			continue
		}
		if err != nil {
			log.Error("nri: evict a claiming container that runs without its secrets", "reason", AwayReason, "err", err)
			continue
		}
		log.Warn("nri: evicted claiming container", "reason", fmt.Sprintf("container %s claims service %q but %s", sc.ctr.GetName(), sc.service, AwayReason))
	}
	return nil
}

// retryReconcile retries the reconcile of Synchronize number gen until it
// succeeds, life ends or a newer Synchronize took over.
func (p *Plugin) retryReconcile(life context.Context, gen uint64, snap snapshot) {
	wait := p.sync.minRetry
	for {
		select {
		case <-life.Done():
			return
		case <-time.After(wait):
		}
		p.sync.mu.Lock()
		current := p.sync.gen == gen
		p.sync.mu.Unlock()
		if !current {
			return
		}
		ctx, cancel := context.WithTimeout(life, 10*time.Second)
		err := p.reconcile(ctx, snap)
		cancel()
		if err == nil {
			p.sync.logger().Info("nri: the agent answered; synchronize settled")
			return
		}
		wait = min(wait*2, maxSyncRetry)
	}
}
