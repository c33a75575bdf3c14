//go:build linux

package manager

// The simulated agent of BenchmarkLiveUpdateAgents
// (liveupdate_bench_test.go): a real mTLS dispatcher session that applies
// every message with the agent's own grant cache and plans its containers'
// files with the agent's own diff; the swap and the report's timing are
// simulated.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/pki"

	// Test-only: the simulated agents apply the stream with the agent's
	// own grant cache and plan their files with the agent's own diff. The
	// manager package itself never imports agent/ (docs/architecture.md).
	"github.com/lockbox-project/lockbox/agent/grants"
	"github.com/lockbox-project/lockbox/mounter"
)

const (
	liveBenchService  = "live"
	plainBenchService = "plain"
	liveBenchBytes    = 64
)

// liveEvent is what a simulated agent did with one message: when it had
// applied it and when its live-update container's file changed (zero: not
// changed).
type liveEvent struct {
	rev              uint64
	changes          int
	applied, changed time.Time
	err              error
}

// reportAck is an UPDATED report the manager recorded: the secret the
// container then held, and when the heartbeat that carried it returned.
type reportAck struct {
	secret string
	at     time.Time
	err    error
}

// simContainer is a simulated running container: its service and the
// files it holds, in its own directory on a tmpfs.
type simContainer struct {
	id, service, dir string
	files            []mounter.File
}

// liveAgent is a simulated agent holding one running container of each
// service: the live-update one first, then the one without.
type liveAgent struct {
	containers []*simContainer
	conn       *grpc.ClientConn
	cancel     context.CancelFunc
	disp       dapi.DispatcherClient
	cache      *grants.Cache
	events     chan liveEvent
	acks       chan reportAck
	// now sends each UPDATED report at once on its own heartbeat; else
	// it waits for the agent's next periodic heartbeat, as lockbox agent
	// does (agent/session: the report queue).
	now     bool
	mu      sync.Mutex
	pending []*dapi.MountReport
	// refused counts the heartbeats with reports that the manager
	// refused (etcd overloaded: the reports wait for the next beat).
	refused atomic.Int64
}

func (a *liveAgent) close() {
	a.cancel()
	a.conn.Close()
	a.cache.Close()
}

// connectLiveAgent opens nd's session, applies its COMPLETE message,
// "starts" its containers (their files written, MOUNTED reports recorded),
// then follows the stream.
func connectLiveAgent(nd node, hostname, addr, dir string, now bool, beat time.Duration) (*liveAgent, error) {
	cfg, err := pki.ClientTLSFromPEM(nd.root, nd.cert)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(addr, append(dapi.Transport{}.DialOptions(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))...)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &liveAgent{conn: conn, cancel: cancel, disp: dapi.NewDispatcherClient(conn),
		cache: grants.NewCache(), events: make(chan liveEvent, 64), acks: make(chan reportAck, 64), now: now}
	for _, svc := range []string{liveBenchService, plainBenchService} {
		a.containers = append(a.containers, &simContainer{id: svc + "-" + nd.id, service: svc, dir: filepath.Join(dir, svc)})
	}
	fail := func(err error) (*liveAgent, error) {
		a.close()
		return nil, err
	}
	// Described as it joined (joinNode), as an agent describes itself.
	desc := &types.NodeDescription{Hostname: hostname, Platform: &types.Platform{Os: "linux"}}
	ss, err := a.disp.Session(ctx, &dapi.SessionRequest{Description: desc})
	if err != nil {
		return fail(err)
	}
	first, err := ss.Recv()
	if err != nil {
		return fail(err)
	}
	if err := a.cache.Apply(first); err != nil {
		return fail(err)
	}
	// Each container starts with its service's files: a pass that mounts
	// (everything is Added), live update or not.
	var mounted []*dapi.MountReport
	for _, c := range a.containers {
		if err := os.MkdirAll(c.dir, 0o700); err != nil {
			return fail(err)
		}
		changed, err := a.pass(c, true)
		if err == nil && !changed {
			err = fmt.Errorf("service %s's grants gave its container no file", c.service)
		}
		if err != nil {
			return fail(err)
		}
		mounted = append(mounted, c.report(dapi.MountReport_MOUNTED))
	}
	// Sent at once: the start is not what is measured.
	if _, err := a.heartbeat(mounted); err != nil {
		return fail(err)
	}
	go a.beat(ctx, beat)
	go func() {
		defer close(a.events)
		for {
			m, err := ss.Recv()
			if err != nil {
				return
			}
			a.events <- a.handle(m)
		}
	}()
	return a, nil
}

// handle applies one message and does what the agent's live pass does for
// each container it holds. Inline, where lockbox agent runs the pass on
// its own goroutine woken by Cache.Changed: the same work, one hop less.
func (a *liveAgent) handle(m *dapi.SessionMessage) liveEvent {
	ev := liveEvent{rev: m.GetRevision(), changes: len(m.GetChanges())}
	if ev.err = a.cache.Apply(m); ev.err != nil {
		return ev
	}
	ev.applied = time.Now()
	// The agent's pass over every container it holds.
	live := a.containers[0]
	for _, c := range a.containers {
		changed, err := a.pass(c, false)
		if err != nil {
			ev.err = err
			return ev
		}
		if changed && c != live {
			ev.err = fmt.Errorf("container %s of %s, a service without live update, had its files changed", c.id, c.service)
			return ev
		}
		if changed {
			ev.changed = time.Now()
		}
	}
	if ev.changed.IsZero() {
		return ev
	}
	r := live.report(dapi.MountReport_UPDATED)
	if !a.now {
		a.mu.Lock()
		a.pending = append(a.pending, r)
		a.mu.Unlock()
		return ev
	}
	at, err := a.heartbeat([]*dapi.MountReport{r})
	if a.keep([]*dapi.MountReport{r}, err) {
		return ev // the next beat sends it again
	}
	a.acks <- reportAck{secret: strings.Join(r.SecretIds, ","), at: at, err: err}
	return ev
}

// keep puts reports that a heartbeat failed to deliver back at the head of
// the queue, as the agent's report queue does for any error but
// InvalidArgument (agent/session), counts the refusal, and reports whether
// it did.
func (a *liveAgent) keep(sent []*dapi.MountReport, err error) bool {
	if err == nil || status.Code(err) == codes.InvalidArgument {
		return false
	}
	a.refused.Add(1)
	a.mu.Lock()
	a.pending = append(sent, a.pending...)
	a.mu.Unlock()
	return true
}

// beat heartbeats every period from a random phase, as lockbox agent does
// (agent/session), carrying the reports queued since the last beat.
func (a *liveAgent) beat(ctx context.Context, period time.Duration) {
	t := time.NewTimer(rand.N(period))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.mu.Lock()
		sent := a.pending
		a.pending = nil
		a.mu.Unlock()
		at, err := a.heartbeat(sent)
		if ctx.Err() != nil {
			return
		}
		if a.keep(sent, err) {
			t.Reset(period)
			continue
		}
		for _, r := range sent {
			a.acks <- reportAck{secret: strings.Join(r.SecretIds, ","), at: at, err: err}
		}
		t.Reset(period)
	}
}

// pass is agent.liveUpdate for one container, with the swap simulated
// (mount: the container's start, which takes its service's files whether
// or not it has live update). It reports whether the files changed.
func (a *liveAgent) pass(c *simContainer, mount bool) (bool, error) {
	view, err := a.cache.Restrict(c.service)
	if err != nil {
		return false, err
	}
	if !mount && !view.LiveUpdate() {
		// Running containers of a service without live update keep
		// what they have, as under swarm.
		return false, nil
	}
	plan, err := mounter.NewPlan(mounter.Linux, view.Grants())
	if err != nil {
		return false, err
	}
	plan.Owner = c.id
	diff := mounter.DiffFiles(c.files, plan.Files)
	if diff.Empty() {
		return false, nil
	}
	for _, f := range append(diff.Added, diff.Changed...) {
		if err := c.swap(f, view); err != nil {
			return false, err
		}
	}
	for _, f := range diff.Removed {
		if err := os.Remove(c.path(f)); err != nil {
			return false, err
		}
	}
	c.files = plan.Files
	return true, nil
}

// path is where the simulated container sees f: one file per target.
func (c *simContainer) path(f mounter.File) string {
	return filepath.Join(c.dir, strings.ReplaceAll(strings.TrimPrefix(f.Target, "/"), "/", "%"))
}

// swap writes f's bytes beside the file at its target and renames them
// over it: a reader sees the old file or the new one, never a partial one.
func (c *simContainer) swap(f mounter.File, view *grants.Restricted) error {
	dst := c.path(f)
	tmp := dst + ".new"
	err := view.WithSecret(f.SecretID, func(data []byte) error {
		fd, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, f.Mode.Perm())
		if err != nil {
			return err
		}
		_, werr := fd.Write(data)
		if cerr := fd.Close(); werr == nil {
			werr = cerr
		}
		return werr
	})
	if err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// report is what the container holds now, with the secret IDs, as the
// agent's report says it.
func (c *simContainer) report(ev dapi.MountReport_Event) *dapi.MountReport {
	r := &dapi.MountReport{Event: ev, ContainerId: c.id, ServiceName: c.service}
	for _, f := range c.files {
		r.SecretNames = append(r.SecretNames, f.SecretName)
		r.SecretIds = append(r.SecretIds, f.SecretID)
	}
	return r
}

// heartbeat sends reports on one heartbeat and returns when the manager
// had recorded them (the call returned).
func (a *liveAgent) heartbeat(reports []*dapi.MountReport) (time.Time, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := a.disp.Heartbeat(ctx, &dapi.HeartbeatRequest{Reports: reports})
	return time.Now(), err
}
