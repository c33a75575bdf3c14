package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/lockbox-project/lockbox/agent"
	"github.com/lockbox-project/lockbox/agent/grants"
	"github.com/lockbox-project/lockbox/agent/localapi"
	"github.com/lockbox-project/lockbox/agent/session"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/internal/buildinfo"
	"github.com/lockbox-project/lockbox/internal/secretmem"
	"github.com/lockbox-project/lockbox/internal/sysmon"
	"github.com/lockbox-project/lockbox/plugin/nri"
)

// Version is reported to the managers as the agent's version: the
// build's (internal/buildinfo, one home for it).
var Version = buildinfo.Get().Version

// sysmonSlack is the timer slack of the Go runtime's system monitor thread
// in the agent (internal/sysmon): it then wakes about every millisecond
// while the agent works, not every 20-70 µs. What it does at those
// wake-ups (take a processor back from a long system call, preempt a
// goroutine that ran 10 ms, poll the network after 10 ms) waits that much
// longer at most.
const sysmonSlack = time.Millisecond

// Options are the agent's command-line settings.
type Options struct {
	Managers []string
	// Token is the worker join token (first start only); zeroed once the
	// session has used it.
	Token    []byte
	StateDir string
	Socket   string
	// Hostname is the name the node joins with (default: the host's
	// name). The managers fix it at the join and keep worker hostnames
	// unique, so that placement by node.hostname cannot be claimed by
	// another node; set it where several agents share a host.
	Hostname string
	// NRI runs the NRI plugin in the agent's process.
	NRI       bool
	NRISocket string
	// RequireBitLocker refuses to start on Windows when the state
	// directory's volume is not BitLocker-protected.
	RequireBitLocker bool
	Log              *slog.Logger
	// ReapInterval is how often the agent looks for containers that ended
	// without a release (default 30s).
	ReapInterval time.Duration
	// Ready, if set, is closed once the local API serves.
	Ready chan<- struct{}
	// MetricsAddr serves Prometheus metrics over plain HTTP on /metrics;
	// "" (the default) serves none.
	MetricsAddr string
}

// Run runs the agent until ctx ends.
func Run(ctx context.Context, o Options) error {
	// First of all: no core dumps, no ptrace by other users. Secrets
	// arrive only after this.
	if err := secretmem.Harden(); err != nil {
		return fmt.Errorf("harden process: %w", err)
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.StateDir == "" {
		return errors.New("--state-dir is required")
	}
	if o.Socket == "" {
		o.Socket = localapi.DefaultSocket
	}
	if err := stateDir(o.StateDir); err != nil {
		return err
	}

	// The agent's heap is small and steady; a tighter GC target keeps its
	// footprint close to what it holds (the default lets it double).
	debug.SetGCPercent(50)
	// Each claim is a burst of short system calls, through which the
	// runtime's system monitor wakes every 20-70 µs: more than a quarter of
	// the agent's CPU samples in the shim benchmark. Timer slack on that
	// thread alone lets the kernel batch its wake-ups.
	if tid, err := sysmon.Relax(sysmonSlack); err != nil {
		o.Log.Debug("runtime system monitor left as it is", "err", err)
	} else {
		o.Log.Debug("runtime system monitor's timer slack set", "thread", tid, "slack", sysmonSlack)
	}

	cache := grants.NewCache()
	defer cache.Close()

	hostname := o.Hostname
	if hostname == "" {
		hostname, _ = os.Hostname()
	}
	desc := &types.NodeDescription{
		Hostname:     hostname,
		Platform:     &types.Platform{Os: runtime.GOOS, Architecture: runtime.GOARCH},
		AgentVersion: Version,
	}
	if err := platformChecks(ctx, o, desc); err != nil {
		return err
	}
	sess, err := session.New(ctx, session.Config{
		StateDir:    o.StateDir,
		Managers:    o.Managers,
		Token:       o.Token,
		Description: desc,
		Cache:       collectingCache{cache},
		Log:         o.Log.With("part", "session"),
	})
	if err != nil {
		return err
	}

	m, err := platformMounter(o.StateDir)
	if err != nil {
		return err
	}
	liveMetrics := newLiveUpdateMetrics()
	core, err := agent.New(agent.Config{StateDir: o.StateDir, Grants: cache, Mounter: m, Log: o.Log.With("part", "agent"), Reports: sess, LiveUpdates: liveMetrics})
	if err != nil {
		return err
	}
	defer core.Close()
	// Heartbeats carry, now and then, the containers the agent holds: the
	// managers drop service ps rows whose WIPED report was lost.
	sess.SetInventory(core)

	ln, err := localapi.Listen(o.Socket)
	if err != nil {
		return err
	}
	srv := localapi.NewServer(core, o.Log.With("part", "localapi"))
	if o.MetricsAddr != "" {
		apiMetrics := newLocalAPIMetrics()
		srv.SetObserver(apiMetrics)
		ms, err := serveMetrics(o.MetricsAddr, sess, cache, core, apiMetrics, o, liveMetrics.collectors()...)
		if err != nil {
			ln.Close()
			return err
		}
		defer ms.Close()
		o.Log.Info("metrics served", "addr", ms.Addr())
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil {
			errc <- err
		}
	}()
	go func() {
		defer wg.Done()
		if err := sess.Run(ctx); err != nil && ctx.Err() == nil {
			// The local API goes on serving what the cache holds.
			o.Log.Error("session to the managers stopped", "err", err)
		}
	}()
	wg.Add(2)
	go func() {
		defer wg.Done()
		reap(ctx, core, o.ReapInterval)
	}()
	go func() {
		defer wg.Done()
		// Running containers of live-update services follow their grants.
		core.RunLiveUpdates(ctx)
	}()
	if o.NRI {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runNRI(ctx, core, o)
		}()
	}
	o.Log.Info("agent serving", "node", sess.NodeID(), "socket", o.Socket, "state_dir", o.StateDir, "nri", o.NRI)
	if o.Ready != nil {
		close(o.Ready)
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	cancel()
	srv.Close()
	wg.Wait()
	o.Log.Info("agent stopped; running containers keep their secrets")
	return runErr
}

// reap releases, every interval, the containers that ended without a
// release reaching the agent.
func reap(ctx context.Context, core *agent.Agent, interval time.Duration) {
	if interval <= 0 {
		interval = 30 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			core.Reap(ctx)
		}
	}
}

// runNRI keeps the NRI plugin registered with containerd until ctx ends:
// containerd restarts, and the agent must not go with it (the hooks and
// the runtime wrapper still need it, and so do running containers).
func runNRI(ctx context.Context, core *agent.Agent, o Options) {
	const minWait, maxWait = 500 * time.Millisecond, 30 * time.Second
	wait := minWait
	for {
		start := time.Now()
		err := nri.New(core).Run(ctx, nri.Options{Socket: o.NRISocket})
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > maxWait {
			wait = minWait // it ran for a while: not a crash loop
		}
		o.Log.Warn("NRI plugin disconnected from containerd; reconnecting", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(wait*2, maxWait)
	}
}
