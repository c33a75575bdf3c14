package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/agent/grants"
	api "github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/internal/testutil/busybox"
	"github.com/lockbox-project/lockbox/linux"
	"github.com/lockbox-project/lockbox/mounter"
)

// liveMsg is a message placing service web (live update as live) with the
// secret ID id (data) at the default target db_pw, whose grant signals
// signal, and api_key at cfg/key.
func liveMsg(typ dispatcher.SessionMessage_Type, rev uint64, live bool, id, data, signal string) *dispatcher.SessionMessage {
	sec := func(id, name, data string) *dispatcher.AssignmentChange {
		return &dispatcher.AssignmentChange{Assignment: &dispatcher.Assignment{Item: &dispatcher.Assignment_Secret{
			Secret: &dispatcher.SecretData{Id: id, Name: name, Data: []byte(data)}}}}
	}
	svc := &dispatcher.AssignmentChange{Assignment: &dispatcher.Assignment{Item: &dispatcher.Assignment_Service{Service: &dispatcher.ServiceGrants{
		ServiceId: "svc1", ServiceName: "web", LiveUpdate: live, Grants: []*dispatcher.Grant{
			{SecretId: id, SecretName: "db_pw_" + id, Target: &types.FileTarget{Name: "db_pw"}, Signal: signal},
			{SecretId: "s2", SecretName: "api_key", Target: &types.FileTarget{Name: "cfg/key", Uid: "1000", Gid: "1000", Mode: 0o400}},
		}}}}}
	return &dispatcher.SessionMessage{Type: typ, Revision: rev, NodeId: "node-7",
		Changes: []*dispatcher.AssignmentChange{sec(id, "db_pw_"+id, data), sec("s2", "api_key", "k-123"), svc}}
}

func liveCache(t *testing.T, live bool, signal string) *grants.Cache {
	t.Helper()
	c := grants.NewCache()
	t.Cleanup(c.Close)
	if err := c.Apply(liveMsg(dispatcher.SessionMessage_COMPLETE, 1, live, "v1", "one", signal)); err != nil {
		t.Fatal(err)
	}
	return c
}

func liveAgent(t *testing.T, state string, c *grants.Cache, rep *fakeReporter) *Agent {
	t.Helper()
	a, err := New(Config{StateDir: state, Grants: c, Mounter: linux.New(), Log: testLog(t), Reports: rep})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

func (f *fakeReporter) events(ev dispatcher.MountReport_Event) []*dispatcher.MountReport {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*dispatcher.MountReport
	for _, r := range f.got {
		if r.GetEvent() == ev {
			out = append(out, r)
		}
	}
	return out
}

// TestLiveUpdate: a rotation of a live-update service's secret reaches its
// running container after the message is applied, is reported with the
// new version, recorded, and counted; the same change for a service
// without live update leaves the container's file alone.
func TestLiveUpdate(t *testing.T) {
	for _, live := range []bool{true, false} {
		t.Run(map[bool]string{true: "live", false: "not live"}[live], func(t *testing.T) {
			state := t.TempDir()
			c := liveCache(t, live, "")
			rep := &fakeReporter{}
			a := liveAgent(t, state, c, rep)
			r := busybox.NewRunc(t)
			pid := runContainer(t, r, "c1")
			ctx := context.Background()
			if _, _, err := a.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "c1", Service: "web", Pid: int32(pid)}}); err != nil {
				t.Fatal(err)
			}
			if m := rep.events(dispatcher.MountReport_MOUNTED); len(m) != 1 || !slices.Contains(m[0].GetSecretIds(), "v1") {
				t.Fatalf("mounted reports %v, want one with secret ID v1", m)
			}
			changed := c.Changed()
			if err := c.Apply(liveMsg(dispatcher.SessionMessage_INCREMENTAL, 2, live, "v2", "two", "")); err != nil {
				t.Fatal(err)
			}
			<-changed
			if due := a.LiveUpdatePass(ctx, time.Now()); !due.IsZero() {
				t.Errorf("a retry is due at %v", due)
			}
			got, err := catIn(t, r, "c1", "/run/secrets/db_pw")
			want := map[bool]string{true: "two", false: "one"}[live]
			if err != nil || got != want {
				t.Errorf("container reads %q (%v), want %q", got, err, want)
			}
			up := rep.events(dispatcher.MountReport_UPDATED)
			counts := a.LiveUpdateCounts()
			if !live {
				if len(up) != 0 || counts.Applied != 0 {
					t.Errorf("not live: updates reported %v, counted %+v", up, counts)
				}
				return
			}
			if len(up) != 1 || up[0].GetContainerId() != "c1" || !slices.Equal(up[0].GetSecretIds(), []string{"v2", "s2"}) ||
				!slices.Equal(up[0].GetSecretNames(), []string{"db_pw_v2", "api_key"}) {
				t.Errorf("updated reports %v", up)
			}
			if counts.Applied != 1 || counts.Failed != 0 {
				t.Errorf("counts %+v", counts)
			}
			rec, err := os.ReadFile(filepath.Join(state, "containers", "c1.json"))
			if err != nil || !strings.Contains(string(rec), `"secret_id":"v2"`) || strings.Contains(string(rec), "two") {
				t.Errorf("record %s (%v): want secret v2 recorded, no data", rec, err)
			}
			// Nothing more to do: a second pass changes and reports nothing.
			a.LiveUpdatePass(ctx, time.Now())
			if up := rep.events(dispatcher.MountReport_UPDATED); len(up) != 1 {
				t.Errorf("second pass reported %d updates", len(up))
			}
			// A restarted agent knows the container's files from its record.
			a.Close()
			b := liveAgent(t, state, c, &fakeReporter{})
			b.mu.Lock()
			h := b.held["c1"]
			b.mu.Unlock()
			if h == nil || len(h.files) != 2 || h.files[0].SecretID != "v2" || h.files[0].Target != "/run/secrets/db_pw" {
				t.Fatalf("restarted agent holds %+v", h)
			}
			// ... and updates it again.
			brep := &fakeReporter{}
			b.reports = brep
			if err := c.Apply(liveMsg(dispatcher.SessionMessage_INCREMENTAL, 3, live, "v3", "three", "")); err != nil {
				t.Fatal(err)
			}
			if due := b.LiveUpdatePass(ctx, time.Now()); !due.IsZero() {
				t.Errorf("restarted agent: a retry is due: %v", brep.events(dispatcher.MountReport_UPDATE_FAILED))
			}
			if got, err := catIn(t, r, "c1", "/run/secrets/db_pw"); err != nil || got != "three" {
				t.Errorf("after the restarted agent's update the container reads %q (%v)", got, err)
			}
			if up := brep.events(dispatcher.MountReport_UPDATED); len(up) != 1 || up[0].GetSecretIds()[0] != "v3" {
				t.Errorf("restarted agent's reports %v", up)
			}
		})
	}
}

// TestLiveUpdateSignal: the grant's signal reaches the container's init,
// once, after its file changed. The agent attaches between runc's create
// and start, as every adapter does; an update in that window changes the
// file but signals nothing: the process is still runc's init, which a
// SIGHUP kills (the container then failed to start: "cannot start a
// container that has stopped"), and the program reads the new file when
// it starts.
func TestLiveUpdateSignal(t *testing.T) {
	c := liveCache(t, true, "SIGHUP")
	rep := &fakeReporter{}
	a := liveAgent(t, t.TempDir(), c, rep)
	r := busybox.NewRunc(t)
	b, err := busybox.NewBundle(filepath.Join(t.TempDir(), "c1"), busybox.Options{
		Args: []string{"sh", "-c", `cat /run/secrets/db_pw > /tmp/first; trap 'echo hup >> /tmp/hups' HUP; touch /tmp/ready; while true; do sleep 0.05; done`}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := busybox.Context(t)
	if err := r.Create(ctx, "c1", b); err != nil {
		t.Fatal(err)
	}
	pid, err := r.Pid(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "c1", Service: "web", Pid: int32(pid)}}); err != nil {
		t.Fatal(err)
	}
	// Created, not started: the file changes, runc's init gets nothing.
	if err := c.Apply(liveMsg(dispatcher.SessionMessage_INCREMENTAL, 2, true, "v2", "two", "SIGHUP")); err != nil {
		t.Fatal(err)
	}
	a.LiveUpdatePass(ctx, time.Now())
	if n := len(rep.events(dispatcher.MountReport_UPDATED)); n != 1 {
		t.Fatalf("%d UPDATED reports before start, want 1", n)
	}
	if err := r.Start(ctx, "c1"); err != nil {
		t.Fatalf("start after a live update in the create-start window: %v", err)
	}
	waitFile(t, filepath.Join(b.Rootfs, "tmp/ready"))
	if got, _ := catIn(t, r, "c1", "/tmp/first"); got != "two" {
		t.Errorf("the program first read %q, want the update's two", got)
	}
	hups := filepath.Join(b.Rootfs, "tmp/hups")
	if _, err := os.Stat(hups); err == nil {
		t.Fatal("the container got a signal for the update made before it started")
	}
	// Started: the next update signals its program, once.
	if err := c.Apply(liveMsg(dispatcher.SessionMessage_INCREMENTAL, 3, true, "v3", "three", "SIGHUP")); err != nil {
		t.Fatal(err)
	}
	a.LiveUpdatePass(ctx, time.Now())
	waitFile(t, hups)
	// A pass with nothing to change sends nothing.
	a.LiveUpdatePass(ctx, time.Now())
	if got, _ := catIn(t, r, "c1", "/tmp/hups"); got != "hup\n" {
		t.Errorf("the container's init got %q, want one hup", got)
	}
}

// waitFile waits for path to exist (a container's marker), failing the
// test after 10 s.
func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLiveUpdateUnreachable: a container the agent cannot reach (mounted
// by a hook that named no process) keeps its files; the failure is
// reported once with the reason, counted, and scheduled for a retry.
func TestLiveUpdateUnreachable(t *testing.T) {
	c := liveCache(t, true, "")
	rep := &fakeReporter{}
	a := liveAgent(t, t.TempDir(), c, rep)
	ctx := context.Background()
	// No pid and no attach: the fds are handed over, as to an OCI hook.
	_, files, err := a.Prepare(ctx, &api.PrepareRequest{Container: &api.Container{Id: "c1", Service: "web"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		f.Close()
	}
	if err := c.Apply(liveMsg(dispatcher.SessionMessage_INCREMENTAL, 2, true, "v2", "two", "")); err != nil {
		t.Fatal(err)
	}
	due := a.LiveUpdatePass(ctx, time.Now())
	if due.IsZero() {
		t.Error("no retry scheduled")
	}
	a.LiveUpdatePass(ctx, time.Now())
	failed := rep.events(dispatcher.MountReport_UPDATE_FAILED)
	if len(failed) != 1 || !strings.Contains(failed[0].GetError(), "cannot reach") || !slices.Contains(failed[0].GetSecretIds(), "v1") {
		t.Fatalf("failure reports %v, want one saying it cannot reach the container, which keeps v1", failed)
	}
	if n := a.LiveUpdateCounts().Failed; n != 1 {
		t.Errorf("failed count %d, want 1 (the second pass waits for the retry)", n)
	}
	// Released: its retry is forgotten.
	if err := a.Release(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if due := a.LiveUpdatePass(ctx, time.Now()); !due.IsZero() {
		t.Errorf("retry still due after release: %v", due)
	}
}

// flakyMounter builds mounts whose Update fails a number of times before
// it applies.
type flakyMounter struct {
	mu       sync.Mutex
	failures int
	tries    int
}

func (f *flakyMounter) Build(ctx context.Context, plan *mounter.Plan, src mounter.SecretSource) (mounter.Mount, error) {
	return &flakyMount{m: f, files: plan.Files}, nil
}

type flakyMount struct {
	m     *flakyMounter
	files []mounter.File
}

func (f *flakyMount) Attach(context.Context, mounter.Container) error { return nil }
func (f *flakyMount) Wipe() error                                     { return nil }

func (f *flakyMount) Update(_ context.Context, _ mounter.Container, next *mounter.Plan, _ mounter.SecretSource) ([]mounter.File, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	f.m.tries++
	if f.m.tries <= f.m.failures {
		return f.files, errors.New("swap refused")
	}
	f.files = next.Files
	return f.files, nil
}

// chanReporter sends every report on a channel.
type chanReporter chan *dispatcher.MountReport

func (c chanReporter) Report(r *dispatcher.MountReport) { c <- r }

// TestLiveUpdateRetries: RunLiveUpdates applies a change as it arrives;
// a failure keeps the old files, is reported, and is retried (after the
// backoff) until it applies.
func TestLiveUpdateRetries(t *testing.T) {
	c := liveCache(t, true, "")
	fm := &flakyMounter{failures: 2}
	rep := make(chanReporter, 16)
	a, err := New(Config{StateDir: t.TempDir(), Grants: c, Mounter: fm, Log: testLog(t), Reports: rep})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The test's own process stands in for the container's.
	if _, _, err := a.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "c1", Service: "web", Pid: int32(os.Getpid())}}); err != nil {
		t.Fatal(err)
	}
	if r := <-rep; r.GetEvent() != dispatcher.MountReport_MOUNTED {
		t.Fatalf("first report %v", r)
	}
	done := make(chan struct{})
	go func() { a.RunLiveUpdates(ctx); close(done) }()
	if err := c.Apply(liveMsg(dispatcher.SessionMessage_INCREMENTAL, 2, true, "v2", "two", "")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := <-rep
	if r.GetEvent() != dispatcher.MountReport_UPDATE_FAILED || r.GetError() != "swap refused" || r.GetSecretIds()[0] != "v1" {
		t.Fatalf("report %v, want the failure with the files kept (v1)", r)
	}
	// The second failure says the same: not reported again. Then it applies.
	r = <-rep
	if r.GetEvent() != dispatcher.MountReport_UPDATED || r.GetSecretIds()[0] != "v2" {
		t.Fatalf("report %v, want the update applied", r)
	}
	if took := time.Since(start); took < liveRetryMin+liveRetryMin*2 {
		t.Errorf("applied after %v: retries did not back off", took)
	}
	if n := a.LiveUpdateCounts(); n.Applied != 1 || n.Failed != 2 {
		t.Errorf("counts %+v, want 1 applied, 2 failed", n)
	}
	cancel()
	<-done
}

// TestLiveUpdateWaitsForTheBind: a rotation that lands while a container
// is being created (prepared before its create, its process not bound yet)
// is neither failed nor lost: the pass asks to be run again shortly, and
// once the shim has attached and bound, the next pass updates the file.
func TestLiveUpdateWaitsForTheBind(t *testing.T) {
	state := t.TempDir()
	c := liveCache(t, true, "")
	a := liveAgent(t, state, c, &fakeReporter{})
	ctx := context.Background()
	hs := prepareBeforeCreate(t, a, "c1")
	changed := c.Changed()
	if err := c.Apply(liveMsg(dispatcher.SessionMessage_INCREMENTAL, 2, true, "v2", "two", "")); err != nil {
		t.Fatal(err)
	}
	<-changed
	before := time.Now()
	due := a.LiveUpdatePass(ctx, time.Now())
	if due.IsZero() || due.Sub(before) > time.Second {
		t.Fatalf("pass during the create: due %v, want a retry within a second", due)
	}
	if n := a.LiveUpdateCounts(); n != (LiveUpdateCounts{}) {
		t.Fatalf("counts %+v during the create, want none", n)
	}

	r := busybox.NewRunc(t)
	pid := runContainer(t, r, "c1")
	if err := linux.AttachHandoversInto(pid, hs); err != nil {
		t.Fatal(err)
	}
	if err := a.Bind(ctx, &api.BindRequest{ContainerId: "c1", Pid: int32(pid)}); err != nil {
		t.Fatal(err)
	}
	if got, err := catIn(t, r, "c1", "/run/secrets/db_pw"); err != nil || got != "one" {
		t.Fatalf("container reads %q (%v) before the pass, want the file it was created with", got, err)
	}
	if due := a.LiveUpdatePass(ctx, time.Now()); !due.IsZero() {
		t.Errorf("a retry is due at %v after the bind", due)
	}
	if got, err := catIn(t, r, "c1", "/run/secrets/db_pw"); err != nil || got != "two" {
		t.Errorf("container reads %q (%v) after the pass, want the rotated file", got, err)
	}
	if n := a.LiveUpdateCounts(); n != (LiveUpdateCounts{Applied: 1}) {
		t.Errorf("counts %+v, want one applied", n)
	}
}
