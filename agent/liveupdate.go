package agent

import (
	"context"
	"errors"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/mounter"
)

// Live updates (issue 14): when the grants of a service with live_update
// change, every running container the agent holds for it gets its files
// changed, in place, without a restart. The work is level-triggered: after
// every message the grant cache applies (grants.Cache.Changed), and when
// a retry is due, the agent compares each held container's files with
// those its service's grants give now, and has the mounter (a
// mounter.Updater) change what differs. A disconnected agent that
// reconnects gets a snapshot, and the same comparison catches its
// containers up. A failed update leaves the container's previous files in
// place, is reported (UPDATE_FAILED) and retried with backoff until it
// applies, the grants change again, or the container goes.

// LiveUpdateObserver is told of every live update the agent tries on a
// container (the daemon's metrics): the service, whether it applied, and
// how long after the grant change was seen it was done.
type LiveUpdateObserver interface {
	ObserveLiveUpdate(service string, ok bool, took time.Duration)
}

// LiveUpdateCounts is how many live updates the agent applied and how many
// attempts failed since it started.
type LiveUpdateCounts struct {
	Applied, Failed uint64
}

const (
	liveRetryMin = time.Second
	liveRetryMax = time.Minute
	// liveWorkers bounds how many containers are updated at once: each
	// update runs on its own OS thread in the container's namespace.
	liveWorkers = 4
	// livePendingRetry is how soon a container being created (prepared,
	// not bound yet) is looked at again.
	livePendingRetry = 100 * time.Millisecond
)

// liveState is the agent's live-update bookkeeping.
type liveState struct {
	obs LiveUpdateObserver
	mu  sync.Mutex
	// by container ID: the failure being retried.
	retry   map[string]*liveRetry
	applied uint64
	failed  uint64
}

// liveRetry is a container whose update failed.
type liveRetry struct {
	// want identifies the files the failed update was for: a change of
	// the grants makes it stale, and the next pass tries at once.
	want string
	// err is the last failure reported, so that a retry failing the same
	// way does not fill the audit log.
	err   string
	tries int
	due   time.Time
	// signals are those of targets an update changed before failing,
	// still to be sent once the update completes.
	signals []string
}

// LiveUpdateCounts returns how many live updates applied and failed.
func (a *Agent) LiveUpdateCounts() LiveUpdateCounts {
	a.live.mu.Lock()
	defer a.live.mu.Unlock()
	return LiveUpdateCounts{Applied: a.live.applied, Failed: a.live.failed}
}

// RunLiveUpdates brings the running containers of live-update services up
// to date after every change of the grants, and retries failures, until
// ctx ends.
func (a *Agent) RunLiveUpdates(ctx context.Context) {
	var (
		timer   *time.Timer
		writers sync.WaitGroup
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
		writers.Wait()
	}()
	for {
		// Taken before the pass: a change during the pass wakes the next.
		changed := a.grants.Changed()
		seen := time.Now()
		// The records are rewritten beside the next pass, not before it:
		// a change that arrives meanwhile does not wait for the disk.
		due, dirty := a.pass(ctx, seen)
		if len(dirty) > 0 {
			writers.Add(1)
			go func() {
				defer writers.Done()
				a.putRecords(dirty)
			}()
		}
		var retry <-chan time.Time
		if !due.IsZero() {
			if timer != nil {
				timer.Stop()
			}
			timer = time.NewTimer(time.Until(due))
			retry = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-retry:
		}
	}
}

// LiveUpdatePass compares every held container of a live-update service
// with its service's grants and updates those that differ; seen is when
// the grant change was noticed (the latency measured). It returns when
// the earliest retry is due (zero: none).
func (a *Agent) LiveUpdatePass(ctx context.Context, seen time.Time) time.Time {
	due, dirty := a.pass(ctx, seen)
	a.putRecords(dirty)
	return due
}

// pass is LiveUpdatePass, returning the containers whose records are to
// be rewritten instead of rewriting them.
func (a *Agent) pass(ctx context.Context, seen time.Time) (time.Time, []string) {
	a.mu.Lock()
	ids := make([]string, 0, len(a.held))
	for id := range a.held {
		ids = append(ids, id)
	}
	a.mu.Unlock()
	sort.Strings(ids)
	var (
		wg    sync.WaitGroup
		sem   = make(chan struct{}, liveWorkers)
		mu    sync.Mutex
		next  time.Time
		dirty []string
	)
	for _, id := range ids {
		if ctx.Err() != nil || a.closed.Load() {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			var d bool
			due := a.liveUpdate(ctx, id, seen, &d)
			mu.Lock()
			if !due.IsZero() && (next.IsZero() || due.Before(next)) {
				next = due
			}
			if d {
				dirty = append(dirty, id)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	a.live.mu.Lock()
	for id := range a.live.retry {
		if !sliceHas(ids, id) {
			delete(a.live.retry, id) // released meanwhile
		}
	}
	a.live.mu.Unlock()
	return next, dirty
}

// putRecords rewrites the records of the containers ids, as they are now,
// under each container's lock (a release meanwhile removed its record:
// nothing is written back).
func (a *Agent) putRecords(ids []string) {
	for _, id := range ids {
		unlock := a.locks.lock(id)
		a.mu.Lock()
		h := a.held[id]
		var rec record
		if h != nil {
			rec = h.rec
		}
		a.mu.Unlock()
		if h != nil {
			if err := a.records.put(rec); err != nil {
				a.log.Warn("live update: record the container's files", "container", id, "err", err)
			}
		}
		unlock()
	}
}

func sliceHas(sorted []string, s string) bool {
	i := sort.SearchStrings(sorted, s)
	return i < len(sorted) && sorted[i] == s
}

// liveUpdate brings one container up to date, under its lock, and returns
// when it is to be tried again (zero: up to date, or nothing to do).
// dirty is set when the container's record is to be rewritten.
func (a *Agent) liveUpdate(ctx context.Context, id string, seen time.Time, dirty *bool) time.Time {
	h, unlock := a.lockHeld(id)
	defer unlock()
	if h == nil {
		return time.Time{}
	}
	view, err := a.grants.Restrict(h.rec.Service)
	if err != nil || !view.LiveUpdate() {
		// A service without live update (or that left the node): its
		// running containers keep what they have, as under swarm.
		a.liveDone(id)
		return time.Time{}
	}
	osys := mounter.OS(h.rec.OS)
	if osys == "" {
		osys = mounter.Linux
	}
	plan, err := mounter.NewPlan(osys, view.Grants())
	if err != nil {
		return a.liveFailed(h, "", nil, "the service's references cannot be mounted: "+err.Error())
	}
	plan.Owner = id
	diff := mounter.DiffFiles(h.files, plan.Files)
	if diff.Empty() {
		a.liveDone(id)
		return time.Time{}
	}
	want := fingerprint(plan.Files)
	if due, wait := a.liveWaiting(id, want); wait {
		return due
	}
	if h.pending {
		// Being created: its files are not in place until the shim's
		// attach, nor reachable until its Bind names the process, which
		// follows within milliseconds (or the create fails).
		return time.Now().Add(livePendingRetry)
	}
	// A Windows container has no pid: its files are reached through the
	// mount alone, and it lives until its release (no exit watch there).
	windows := osys == mounter.Windows
	if h.rec.Pid <= 0 && !windows {
		return a.liveFailed(h, want, nil, "the container was mounted from inside its own mount namespace by an OCI hook that named no process; the agent cannot reach it: restart the container to get the new files")
	}
	up, ok := h.mount.(mounter.Updater)
	if !ok || h.mount == nil {
		reason := "this platform's mounts cannot be updated live: restart the container to get the new files"
		if h.mount == nil {
			reason = "the agent restarted since the container started and cannot reach its mount: restart the container to get the new files"
		}
		return a.liveFailed(h, want, nil, reason)
	}
	if pid, alive := h.rec.alive(nil); !windows && (!alive || pid != h.rec.Pid) {
		// Ended: the exit watch (or Reap) releases it.
		return time.Time{}
	}
	if len(diff.Added) > 0 {
		// Recorded before the new mounts can appear, as at Prepare: a
		// restarted agent takes back (to wipe) the mounts at the targets
		// its record names.
		rec := h.rec
		rec.setFiles(append(append([]mounter.File(nil), h.files...), diff.Added...))
		if err := a.records.put(rec); err != nil {
			return a.liveFailed(h, want, nil, err.Error())
		}
	}
	mc := mounter.Container{ID: id, Pid: h.rec.Pid, UIDMappings: h.uid, GIDMappings: h.gid}
	files, uerr := up.Update(ctx, mc, plan, view)
	// What changed, even part way: its signals are owed.
	changed := mounter.DiffFiles(h.files, files)
	signals := signalsOf(changed, h.files)
	a.mu.Lock()
	h.files = files
	h.rec.setFiles(files)
	a.mu.Unlock()
	// The record is rewritten after the pass (LiveUpdatePass): a file
	// write costs as much as the swap, and each one here would delay
	// every container after it. Its targets already cover the mounts.
	*dirty = true
	if uerr != nil {
		if _, alive := h.rec.alive(nil); !alive && !windows {
			// It ended meanwhile: nothing failed that matters; the
			// exit watch releases it.
			return time.Time{}
		}
		return a.liveFailed(h, want, signals, uerr.Error())
	}
	signals = append(a.liveDone(id), signals...)
	took := time.Since(seen)
	a.live.mu.Lock()
	a.live.applied++
	a.live.mu.Unlock()
	if a.live.obs != nil {
		a.live.obs.ObserveLiveUpdate(h.rec.Service, true, took)
	}
	names, ids := fileNames(files)
	a.log.Info("secrets updated live", "container", id, "service", h.rec.Service, "secrets", names, "took", took)
	if a.reports != nil {
		a.reports.Report(&dapi.MountReport{Event: dapi.MountReport_UPDATED, ContainerId: id, ServiceName: h.rec.Service, SecretNames: names, SecretIds: ids})
	}
	if windows {
		// Windows containers take no signals (the managers refuse
		// them for Windows services).
		signals = nil
	}
	for _, sig := range dedupe(signals) {
		if err := signalContainer(h.rec.Pid, h.rec.PidStart, h.rec.PreStartExe, sig); err != nil {
			if errors.Is(err, errNotStarted) {
				a.log.Info("live update: no signal", "container", id, "service", h.rec.Service, "signal", sig, "reason", err)
				continue
			}
			a.log.Warn("live update: signal the container", "container", id, "service", h.rec.Service, "signal", sig, "err", err)
			continue
		}
		a.log.Info("signalled the container after a live update", "container", id, "service", h.rec.Service, "signal", sig)
	}
	return time.Time{}
}

// errNotStarted: the container's process still runs the runtime's init
// (record.PreStartExe), so no signal is sent.
var errNotStarted = errors.New("the container has not started: its program reads the new files when it starts")

// liveWaiting reports whether a failed update of id for the same files is
// still waiting for its retry, and when that is due.
func (a *Agent) liveWaiting(id, want string) (time.Time, bool) {
	a.live.mu.Lock()
	defer a.live.mu.Unlock()
	r := a.live.retry[id]
	if r == nil || r.want != want || !time.Now().Before(r.due) {
		return time.Time{}, false
	}
	return r.due, true
}

// liveDone forgets id's failure, if any, and returns the signals it owed.
func (a *Agent) liveDone(id string) []string {
	a.live.mu.Lock()
	defer a.live.mu.Unlock()
	r := a.live.retry[id]
	if r == nil {
		return nil
	}
	delete(a.live.retry, id)
	return r.signals
}

// liveFailed counts and, when it is news, reports the failure of h's
// update for want, and schedules its retry with backoff.
func (a *Agent) liveFailed(h *held, want string, signals []string, reason string) time.Time {
	id := h.rec.ID
	a.live.mu.Lock()
	if a.live.retry == nil {
		a.live.retry = map[string]*liveRetry{}
	}
	r := a.live.retry[id]
	if r == nil || r.want != want {
		var owed []string
		if r != nil {
			owed = r.signals
		}
		r = &liveRetry{want: want, signals: owed}
		a.live.retry[id] = r
	}
	news := r.err != reason
	r.err = reason
	r.signals = append(r.signals, signals...)
	r.due = time.Now().Add(min(liveRetryMin<<min(r.tries, 10), liveRetryMax))
	r.tries++
	a.live.failed++
	due := r.due
	a.live.mu.Unlock()
	if a.live.obs != nil {
		a.live.obs.ObserveLiveUpdate(h.rec.Service, false, 0)
	}
	if news {
		a.log.Warn("live update failed; the container keeps its previous files, retrying", "container", id, "service", h.rec.Service, "err", reason)
		names, ids := fileNames(h.files)
		if a.reports != nil {
			a.reports.Report(&dapi.MountReport{Event: dapi.MountReport_UPDATE_FAILED, ContainerId: id, ServiceName: h.rec.Service,
				SecretNames: names, SecretIds: ids, Error: reason})
		}
	}
	return due
}

// fingerprint identifies a set of files by what is at each target.
func fingerprint(files []mounter.File) string {
	parts := make([]string, len(files))
	for i, f := range files {
		parts[i] = strings.Join([]string{f.Target, f.SecretID, f.Mode.String(), strconv.FormatUint(uint64(f.UID), 10), strconv.FormatUint(uint64(f.GID), 10), f.Signal}, "\x00")
	}
	sort.Strings(parts)
	return strings.Join(parts, "\x01")
}

// signalsOf returns the signals of the files a diff changed: the new
// grant's for an added or changed target, the old one's for a removed one.
func signalsOf(d mounter.FileDiff, old []mounter.File) []string {
	var out []string
	for _, f := range append(append([]mounter.File(nil), d.Added...), d.Changed...) {
		if f.Signal != "" {
			out = append(out, f.Signal)
		}
	}
	for _, f := range d.Removed {
		if f.Signal != "" {
			out = append(out, f.Signal)
		}
	}
	return out
}

func dedupe(ss []string) []string {
	var out []string
	for _, s := range ss {
		if !sliceContains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func sliceContains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// fileNames returns the secrets' names and IDs of files, in order.
func fileNames(files []mounter.File) (names, ids []string) {
	names = make([]string, len(files))
	ids = make([]string, len(files))
	for i, f := range files {
		names[i], ids[i] = f.SecretName, f.SecretID
	}
	return names, ids
}
