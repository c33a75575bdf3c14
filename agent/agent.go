package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockbox-project/lockbox/agent/errdefs"
	"github.com/lockbox-project/lockbox/agent/grants"
	"github.com/lockbox-project/lockbox/agent/localapi"
	api "github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/internal/steptrace"
	"github.com/lockbox-project/lockbox/mounter"
)

// trace is the phase benchmark's step trace (internal/steptrace): nil, and
// each step a nil check, unless its variable is set when the agent starts.
var trace = steptrace.Open(os.Getenv)

// Config is what an Agent is made of.
type Config struct {
	// StateDir holds the container records (IDs only).
	StateDir string
	Grants   *grants.Cache
	// Mounter builds mounts: the platform's (agent/daemon picks it). Its
	// optional capabilities (mounter.Recoverer, mounter.StoreRecoverer, a
	// Mount's mounter.Handoverer) are found by type assertion.
	Mounter mounter.Mounter
	Log     *slog.Logger
	// Reports, if set, is told of every mount and wipe (the session, for
	// the managers' audit log).
	Reports Reporter
	// LiveUpdates, if set, is told of every live update tried (metrics).
	LiveUpdates LiveUpdateObserver
}

// held is one container the agent has mounted. mount is nil for containers
// recovered from the records after a restart: their files live on in the
// container, but the agent lost the fds with its previous process.
type held struct {
	rec   record
	mount mounter.Mount
	// uid and gid are the user-namespace mappings the mount was handed
	// over or attached for: its files are owned for them.
	uid, gid []mounter.IDMapping
	// files are the files the container holds now (the plan's at
	// Prepare, then each live update's); guarded by the container's lock.
	files []mounter.File
	// pending: prepared before its create and not bound yet (Bind): no
	// process to watch or to reach, and no record on disk. Guarded by the
	// container's lock.
	pending bool
	// drain is the release exitDrain after the process's exit (exited),
	// stopped if a release comes first. Guarded by a.mu.
	drain *time.Timer
}

// Agent serves the local API. It implements localapi.Handler.
type Agent struct {
	grants  *grants.Cache
	mounter mounter.Mounter
	records *recordStore
	log     *slog.Logger
	selfNS  uint64

	locks keyedMutex
	mu    sync.Mutex
	held  map[string]*held

	// exits watches the processes of held containers (nil: no watch).
	exits *exitWatch
	// reports is Config.Reports (nil: none).
	reports Reporter
	// closed is set by Close: a release the exit watch scheduled earlier
	// is then left to the next agent's recovery.
	closed   atomic.Bool
	released [numCauses]atomic.Uint64
	// wiping is the wipes that follow their release's answer (release.go).
	wiping asyncWipes
	// refused counts the claims the claim rules refused (targets.go).
	refused refusals
	// live is the live updates' retry state (liveupdate.go).
	live liveState
}

var _ localapi.Handler = (*Agent)(nil)

// lockHeld takes id's lock and returns what the agent holds under id (nil
// if nothing) with the unlock: a held container is read and changed only
// under its lock.
func (a *Agent) lockHeld(id string) (*held, func()) {
	unlock := a.locks.lock(id)
	a.mu.Lock()
	h := a.held[id]
	a.mu.Unlock()
	return h, unlock
}

// New returns an Agent and recovers its records: containers that no longer
// exist are forgotten, running ones are listed again.
func New(cfg Config) (*Agent, error) {
	if cfg.Grants == nil {
		return nil, errors.New("agent: no grant cache")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Mounter == nil {
		return nil, errors.New("agent: no mounter")
	}
	rs, err := newRecordStore(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	a := &Agent{grants: cfg.Grants, mounter: cfg.Mounter, records: rs, log: cfg.Log, held: map[string]*held{}, reports: cfg.Reports}
	a.live.obs = cfg.LiveUpdates
	a.selfNS, _ = mntNS("self")
	a.recover()
	a.startExitWatch()
	return a, nil
}

func (a *Agent) recover() {
	recs, errs := a.records.list()
	for _, err := range errs {
		a.log.Warn("container record unreadable; left in place", "err", err)
	}
	if len(recs) == 0 {
		return
	}
	if !livenessKnown {
		// No /proc to tell: every recorded container is taken to run, and
		// the platform mounter sorts out what it left on disk.
		for _, r := range recs {
			a.held[r.ID] = &held{rec: r, files: r.files()}
		}
		a.recoverStore()
		return
	}
	var live map[uint64]int
	for _, r := range recs {
		if r.needsNamespaces() && live == nil {
			live = liveNamespaces()
		}
		if pid, ok := r.alive(live); ok {
			h := &held{rec: r, files: r.files()}
			// Take the mounts back so that Release can wipe them; the
			// container keeps its files either way.
			c := mounter.Container{ID: r.ID, Pid: pid}
			if pid == r.Pid {
				c.Rootfs = r.Rootfs
			}
			m, err := recoverMount(context.Background(), a.mounter, c, r.files())
			if err != nil {
				a.log.Warn("container still running after restart; cannot take its secrets mount back, it goes with the container", "container", r.ID, "err", err)
			} else {
				h.mount = m
				// A live update starts from what was found: a target
				// whose mount is gone holds nothing now.
				if fl, ok := m.(interface{ Files() []mounter.File }); ok {
					h.files = fl.Files()
				}
			}
			h.uid, h.gid = r.UIDMappings, r.GIDMappings
			a.held[r.ID] = h
			a.log.Info("container still running after restart; its secrets stay until it stops", "container", r.ID, "service", r.Service, "recovered", h.mount != nil)
			continue
		}
		// The container is gone, and with its mount namespace the kernel
		// freed the tmpfs: the agent held the only other reference, in the
		// process that died.
		if err := a.records.remove(r.ID); err != nil {
			a.log.Warn("forget finished container", "container", r.ID, "err", err)
			continue
		}
		a.log.Info("forgot container that finished while the agent was down", "container", r.ID)
	}
}

func toMounterContainer(c *api.Container) mounter.Container {
	mc := mounter.Container{ID: c.GetId(), Pid: int(c.GetPid()), Rootfs: c.GetRootfs(), ReadonlyRootfs: c.GetReadonlyRootfs()}
	for _, m := range c.GetUidMappings() {
		mc.UIDMappings = append(mc.UIDMappings, mounter.IDMapping{ContainerID: m.GetContainerId(), HostID: m.GetHostId(), Size: m.GetSize()})
	}
	for _, m := range c.GetGidMappings() {
		mc.GIDMappings = append(mc.GIDMappings, mounter.IDMapping{ContainerID: m.GetContainerId(), HostID: m.GetHostId(), Size: m.GetSize()})
	}
	return mc
}

func containerOS(s string) (mounter.OS, error) {
	switch s {
	case "", "linux":
		return mounter.Linux, nil
	case "windows":
		return mounter.Windows, nil
	}
	return "", errdefs.Errorf(errdefs.Invalid, "container os %q: must be linux or windows", s)
}

// Prepare builds the secrets mount of the claimed service for a container
// and attaches it (req.Attach) or returns its fds. Preparing a container
// that is already prepared does not build again; preparing an ID held for a
// container that has ended replaces it, and one held for another container
// that still runs is refused.
func (a *Agent) Prepare(ctx context.Context, req *api.PrepareRequest) (*api.PrepareResponse, []*os.File, error) {
	c := req.GetContainer()
	id := c.GetId()
	if !validContainerID(id) {
		return nil, nil, errdefs.Errorf(errdefs.Invalid, "container id %q: not a container ID", id)
	}
	trace.Mark(id, "agent-prepare")
	if c.GetService() == "" {
		return nil, nil, errdefs.Errorf(errdefs.Invalid, "container %s claims no service", id)
	}
	osys, err := containerOS(c.GetOs())
	if err != nil {
		return nil, nil, err
	}
	unlock := a.locks.lock(id)
	defer unlock()

	who, err := a.identify(ctx, req)
	if err != nil {
		return nil, nil, err
	}
	trace.Mark(id, "agent-identified")
	mc := toMounterContainer(c)
	a.mu.Lock()
	h := a.held[id]
	a.mu.Unlock()
	if h != nil && h.pending {
		// Another create of the same ID (another containerd namespace)
		// must not share the tmpfs of one not bound yet; its own create's
		// failure or its shim manager's Stop releases it.
		return nil, nil, errdefs.Errorf(errdefs.Invalid, "container ID %s is held for a container being created (its secrets handed over, its process not bound yet)", id)
	}
	if h != nil {
		v, pid := a.judgeHeld(h, who)
		switch v {
		case refuseInUse:
			by := "a running container"
			if pid > 0 {
				by = fmt.Sprintf("a running container (pid %d)", pid)
			}
			return nil, nil, errdefs.Errorf(errdefs.Invalid, "container ID %s is already in use by %s", id, by)
		case replaceEnded:
			// The container that had the ID ended without a Release (a
			// killed shim, a lost hook) and a new one reuses the ID: it
			// must get its own mount, built from the grants as they are
			// now, and the old one must go.
			if err := a.release(id, causeReuse); err != nil {
				return nil, nil, fmt.Errorf("container ID %s is reused: %w", id, err)
			}
			a.log.Info("container ID reused after its container ended without a release; wiped the old secrets", "container", id, "service", h.rec.Service)
		default:
			// Decided again, not answered from what the agent holds:
			// rules tightened since the first claim take effect at the
			// next.
			if _, err := a.admit("prepare", c); err != nil {
				return nil, nil, err
			}
			return a.again(ctx, h, req, mc)
		}
	}

	// The claim rules decide before anything is built.
	view, err := a.admit("prepare", c)
	if err != nil {
		return nil, nil, err
	}
	plan, err := planFor(c, view, osys)
	if err != nil {
		return nil, nil, err
	}
	// The mount is marked for this container: after a restart the agent
	// takes back this container's mounts and no other's.
	plan.Owner = id
	trace.Mark(id, "agent-planned")
	m, err := a.mounter.Build(ctx, plan, view)
	if err != nil {
		return nil, nil, fmt.Errorf("container %s, service %q: build secrets mount: %w", id, c.GetService(), err)
	}
	trace.Mark(id, "agent-built")
	rec := record{ID: id, Service: c.GetService(), Pid: who.Pid, PidStart: who.PidStart, MntNS: who.MntNS,
		UIDMappings: mc.UIDMappings, GIDMappings: mc.GIDMappings}
	if who.Pid > 0 {
		rec.PreStartExe = exeID(who.Pid)
	}
	if osys != mounter.Linux {
		rec.OS = string(osys)
	}
	rec.setFiles(plan.Files)
	if req.GetAttach() && rec.Pid > 0 {
		// A hook's rootfs is the bundle's, which the container's
		// namespace loses at pivot_root: Recover then goes by
		// /proc/<pid>/root instead.
		rec.Rootfs = c.GetRootfs()
	}
	// The record is written beside the attach (0.10–0.13 ms on ext4 beside
	// 0.5–0.7 ms, both on the claim's critical path: BenchmarkShimPhases),
	// and both are done before the answer. The answer is what commits the
	// container: every caller fails closed without it (the shim and the
	// runtime wrapper kill and delete the container, NRI fails its start, a
	// hook fails runc's create), so an agent that dies between the attach
	// and the record leaves files only in a container that never starts,
	// and they go with its mount namespace (the dead agent's fds were the
	// tmpfs's only other reference; on Windows the next agent's recovery
	// removes a directory no record keeps, as it did for a build without
	// its record). A record that lands without its attach is found ended or
	// released by the caller's cleanup, as before.
	recorded := make(chan error, 1)
	pending := req.GetBeforeCreate()
	if pending {
		// No record until the Bind: one without a process would tell a
		// restarted agent nothing it could act on. If this agent dies
		// before the Bind, the Bind fails, the container never starts,
		// and its secrets go with its mount namespace (the shim closed
		// its fds after the attach; this agent's went with it).
		recorded <- nil
	} else {
		go func() { recorded <- a.records.put(rec) }()
	}
	resp, files, err := a.deliver(ctx, m, req, mc, plan)
	trace.Mark(id, "agent-attached")
	if perr := <-recorded; perr != nil && err == nil {
		closeFiles(files)
		err = perr
	}
	if err != nil {
		m.Wipe()
		a.records.remove(id)
		return nil, nil, err
	}
	trace.Mark(id, "agent-recorded")
	a.mu.Lock()
	a.held[id] = &held{rec: rec, mount: m, uid: mc.UIDMappings, gid: mc.GIDMappings, files: plan.Files, pending: pending}
	a.mu.Unlock()
	if err := a.watchPrepared(rec); err != nil {
		closeFiles(files)
		return nil, nil, err
	}
	trace.Mark(id, "agent-watched")
	a.log.Info("secrets mounted", "container", id, "service", rec.Service, "files", len(plan.Files), "attach", req.GetAttach(), "pid", rec.Pid)
	names, ids := fileNames(plan.Files)
	trace.Mark(id, "agent-logged")
	a.reportMounted(id, rec.Service, names, ids)
	trace.Mark(id, "agent-reported")
	return resp, files, nil
}

// identify finds out which container a Prepare comes from, as far as the
// agent can tell.
//
// Before the container's create (before_create, the runtime shim) there is
// nothing to tell: the container is held unknown until its Bind.
//
// With attach (the runtime wrapper, the NRI plugin), pid is the container's
// process as the agent's /proc numbers it. Without attach the caller is in
// the container (an OCI createContainer hook) and pid is whatever the OCI
// state gave it, numbered in the caller's pid namespace: the agent finds
// the container's process among the caller's ancestors in the caller's
// mount namespace (hookContainerProcess) and refuses a pid that is not
// there, so that a hook cannot name a process of another container (or the
// host's init, which runc's hooks see as the container's pid 1). The pid
// is only used to know the container; the agent never enters it.
func (a *Agent) identify(ctx context.Context, req *api.PrepareRequest) (identity, error) {
	c := req.GetContainer()
	id, pid := c.GetId(), int(c.GetPid())
	if pid < 0 {
		return identity{}, errdefs.Errorf(errdefs.Invalid, "container %s: pid %d is not a process", id, pid)
	}
	if req.GetBeforeCreate() {
		// No container yet: nothing to know it by until its Bind, whatever
		// namespace the caller is in (the runtime shim, on the host).
		if req.GetAttach() || pid != 0 {
			return identity{}, errdefs.Errorf(errdefs.Invalid, "container %s: before its create a container has no process: no attach, no pid", id)
		}
		return identity{}, nil
	}
	if !livenessKnown {
		return identity{Pid: pid}, nil
	}
	p, ok := localapi.PeerFromContext(ctx)
	if req.GetAttach() || !ok {
		// The caller names the process directly: a runtime adapter, or a
		// caller in this process (tests, benchmarks).
		if pid == 0 {
			return identity{}, nil
		}
		return processIdentity(id, pid)
	}
	peer := int(p.Pid)
	var peerNS uint64
	if peer > 0 {
		peerNS, _ = mntNS(strconv.Itoa(peer))
	}
	if peerNS == 0 || peerNS == a.selfNS {
		// A caller the agent cannot see (another pid namespace), or one
		// in the agent's own mount namespace (a tool on the host): it is
		// in no container the agent could name.
		if pid != 0 {
			return identity{}, errdefs.Errorf(errdefs.Invalid, "container %s: pid %d: the caller is not in the container's mount namespace", id, pid)
		}
		return identity{}, nil
	}
	cp, err := hookContainerProcess(peer, pid)
	// Everything above read /proc/<peer>: it described the caller only if
	// the caller still runs now (its pid cannot have been reused while it
	// did). A caller that exited mid-request (a hook killed on its
	// timeout) may have left its pid to a process in another container,
	// whose namespace would then be taken for the claim's.
	if err := p.Alive(); err != nil {
		return identity{}, errdefs.Errorf(errdefs.Invalid, "container %s: %v", id, err)
	}
	if err != nil {
		if pid != 0 {
			return identity{}, errdefs.Errorf(errdefs.Invalid, "container %s: pid %d is not the process of the container the caller runs in", id, pid)
		}
		// An older hook that sends no pid, under a runtime that runs it
		// some other way: the namespace is all there is to go by.
		a.log.Debug("hook's container process not found; going by its mount namespace", "container", id, "caller", peer)
		return identity{MntNS: peerNS}, nil
	}
	who, err := processIdentity(id, cp)
	if err != nil {
		return identity{}, err
	}
	if who.MntNS != peerNS {
		// It left the namespace between the walk and now: it ended.
		return identity{}, errdefs.Errorf(errdefs.Invalid, "container %s: its process %d ended", id, cp)
	}
	return who, nil
}

// processIdentity identifies the container whose process is pid.
func processIdentity(id string, pid int) (identity, error) {
	start, err := pidStart(pid)
	if err != nil {
		return identity{}, errdefs.Errorf(errdefs.Invalid, "container %s: pid %d is not a running process", id, pid)
	}
	ns, err := mntNS(strconv.Itoa(pid))
	if err != nil {
		return identity{}, errdefs.Errorf(errdefs.Invalid, "container %s: pid %d is not a running process", id, pid)
	}
	return identity{Pid: pid, PidStart: start, MntNS: ns}, nil
}

// judgeHeld decides what a Prepare from who does with the container the
// agent holds under the same ID, and returns a process of the held
// container when it runs (0 if unknown).
func (a *Agent) judgeHeld(h *held, who identity) (verdict, int) {
	if !livenessKnown {
		// Nothing to tell containers apart by: answer as the holder.
		return sameContainer, 0
	}
	var live map[uint64]int
	if h.rec.needsNamespaces() {
		live = liveNamespaces()
	}
	pid, alive := h.rec.alive(live)
	return judge(h.rec.identity(), alive, who), pid
}

// deliver attaches m in the container or hands its mounts over as fds.
func (a *Agent) deliver(ctx context.Context, m mounter.Mount, req *api.PrepareRequest, mc mounter.Container, plan *mounter.Plan) (*api.PrepareResponse, []*os.File, error) {
	resp := &api.PrepareResponse{}
	if req.GetAttach() {
		if err := m.Attach(ctx, mc); err != nil {
			if errors.Is(err, mounter.ErrMountCollision) {
				// The container's own configuration: the caller's to fix.
				return nil, nil, errdefs.Errorf(errdefs.Invalid, "container %s: attach secrets: %w", mc.ID, err)
			}
			return nil, nil, fmt.Errorf("container %s: attach secrets: %w", mc.ID, err)
		}
		for _, t := range targets(plan) {
			resp.Mounts = append(resp.Mounts, api.AttachedMount(t))
		}
		return resp, nil, nil
	}
	ho, ok := m.(mounter.Handoverer)
	if !ok {
		return nil, nil, errdefs.Errorf(errdefs.Invalid, "container %s: this platform's mounts cannot be handed over as fds; ask the agent to attach", mc.ID)
	}
	hs, err := ho.Handover(mc)
	if err != nil {
		return nil, nil, fmt.Errorf("container %s: hand over secrets: %w", mc.ID, err)
	}
	files := make([]*os.File, len(hs))
	for i, h := range hs {
		resp.Mounts = append(resp.Mounts, api.HandedOverMount(h.Target, i))
		files[i] = h.File
	}
	return resp, files, nil
}

// again answers a second Prepare from the container the agent already
// holds: fresh fds for a caller that attaches itself, the targets
// otherwise.
func (a *Agent) again(ctx context.Context, h *held, req *api.PrepareRequest, mc mounter.Container) (*api.PrepareResponse, []*os.File, error) {
	if h.rec.Service != req.GetContainer().GetService() {
		return nil, nil, errdefs.Errorf(errdefs.Invalid, "container %s already holds the secrets of service %q", mc.ID, h.rec.Service)
	}
	if h.mount != nil && (!slices.Equal(h.uid, mc.UIDMappings) || !slices.Equal(h.gid, mc.GIDMappings)) {
		// The files are owned for the first mappings: under others they
		// would show other owners than the grants ask for.
		return nil, nil, errdefs.Errorf(errdefs.Invalid, "container %s was prepared for other user-namespace id mappings; its secrets are owned for those", mc.ID)
	}
	if req.GetAttach() || h.mount == nil {
		if !req.GetAttach() {
			return nil, nil, errdefs.Errorf(errdefs.NotFound, "container %s was mounted before the agent restarted; its fds are gone", mc.ID)
		}
		resp := &api.PrepareResponse{}
		for _, t := range h.rec.Targets {
			resp.Mounts = append(resp.Mounts, api.AttachedMount(t))
		}
		return resp, nil, nil
	}
	return a.deliver(ctx, h.mount, req, mc, nil)
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

func targets(p *mounter.Plan) []string {
	if p == nil {
		return nil
	}
	ts := make([]string, len(p.Files))
	for i, f := range p.Files {
		ts[i] = f.Target
	}
	return ts
}

// List returns the containers the agent holds mounts for, sorted by ID.
func (a *Agent) List(ctx context.Context) (*api.ListResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	resp := &api.ListResponse{}
	for _, h := range a.held {
		resp.Containers = append(resp.Containers, &api.MountedContainer{Id: h.rec.ID, Service: h.rec.Service, Targets: append([]string(nil), h.rec.Targets...)})
	}
	sort.Slice(resp.Containers, func(i, j int) bool { return resp.Containers[i].Id < resp.Containers[j].Id })
	return resp, nil
}

// Close drops the agent's fds without wiping: running containers keep
// their files, and their records let the next agent tell when they end.
// The kernel frees each tmpfs when its container's mount namespace goes.
func (a *Agent) Close() {
	a.closed.Store(true)
	// Before the fds go: a wipe whose release has answered must finish.
	a.wiping.close()
	a.stopExitWatch()
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, h := range a.held {
		if c, ok := h.mount.(interface{ Close() error }); ok {
			c.Close()
		}
		a.held[id] = &held{rec: h.rec, files: h.files}
	}
}

// keyedMutex serialises work per container ID.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyedEntry{}
	}
	e := k.locks[key]
	if e == nil {
		e = &keyedEntry{}
		k.locks[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}
