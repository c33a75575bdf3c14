package agent

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/agent/grants"
	api "github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/mounter"
)

// winMounter stands in for the Windows mounter: its mounts are Updaters
// that record the container each update was for.
type winMounter struct {
	mu   sync.Mutex
	fail error
	got  []mounter.Container
}

func (w *winMounter) Build(ctx context.Context, plan *mounter.Plan, src mounter.SecretSource) (mounter.Mount, error) {
	if plan.OS != mounter.Windows {
		return nil, errors.New("not a windows plan")
	}
	return &winMount{w: w, files: plan.Files}, nil
}

type winMount struct {
	w     *winMounter
	files []mounter.File
}

func (m *winMount) Attach(context.Context, mounter.Container) error { return nil }
func (m *winMount) Wipe() error                                     { return nil }

func (m *winMount) Update(_ context.Context, c mounter.Container, next *mounter.Plan, _ mounter.SecretSource) ([]mounter.File, error) {
	m.w.mu.Lock()
	defer m.w.mu.Unlock()
	m.w.got = append(m.w.got, c)
	if m.w.fail != nil {
		return m.files, m.w.fail
	}
	m.files = next.Files
	return m.files, nil
}

// TestLiveUpdateWindowsContainer: a Windows container (recorded with os
// windows and no pid: the shim claims it without one) is updated through
// its mount's Updater, not refused for the missing pid; a failure of the
// mount is reported, keeps the old version in the report and the record,
// and is retried.
func TestLiveUpdateWindowsContainer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fail    error
		wantEv  dispatcher.MountReport_Event
		wantIDs []string
		retry   bool
	}{
		{"applied", nil, dispatcher.MountReport_UPDATED, []string{"v2"}, false},
		{"mount fails", errors.New("a reader holds the old file open"), dispatcher.MountReport_UPDATE_FAILED, []string{"v1"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := grants.NewCache()
			t.Cleanup(c.Close)
			if err := c.Apply(winMsg(dispatcher.SessionMessage_COMPLETE, 1, "v1", "one")); err != nil {
				t.Fatal(err)
			}
			wm := &winMounter{fail: tc.fail}
			rep := &fakeReporter{}
			state := t.TempDir()
			a, err := New(Config{StateDir: state, Grants: c, Mounter: wm, Log: testLog(t), Reports: rep})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(a.Close)
			ctx := context.Background()
			if _, _, err := a.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "w1", Service: "web", Os: "windows", Rootfs: `C:\bundle\rootfs`}}); err != nil {
				t.Fatal(err)
			}
			if err := c.Apply(winMsg(dispatcher.SessionMessage_INCREMENTAL, 2, "v2", "two")); err != nil {
				t.Fatal(err)
			}
			due := a.LiveUpdatePass(ctx, time.Now())
			if len(wm.got) != 1 || wm.got[0].ID != "w1" || wm.got[0].Pid != 0 {
				t.Fatalf("mount updated for %+v, want once for w1 (no pid)", wm.got)
			}
			evs := rep.events(tc.wantEv)
			if len(evs) != 1 || !slices.Equal(evs[0].GetSecretIds(), tc.wantIDs) {
				t.Fatalf("%v reports %v, want one with %v", tc.wantEv, evs, tc.wantIDs)
			}
			if tc.fail != nil && !strings.Contains(evs[0].GetError(), tc.fail.Error()) {
				t.Errorf("failure reported as %q, want the mount's error", evs[0].GetError())
			}
			if due.IsZero() == tc.retry {
				t.Errorf("retry due %v, want a retry: %v", due, tc.retry)
			}
			recs, _ := a.records.list()
			if len(recs) != 1 || recs[0].OS != "windows" || len(recs[0].Files) != 1 || recs[0].Files[0].SecretID != tc.wantIDs[0] {
				t.Errorf("record %+v, want the windows container holding %s", recs, tc.wantIDs[0])
			}
			// Nothing left to do (or waiting for the retry): no more tries.
			a.LiveUpdatePass(ctx, time.Now())
			if len(wm.got) != 1 {
				t.Errorf("%d updates, want 1", len(wm.got))
			}
		})
	}
}
