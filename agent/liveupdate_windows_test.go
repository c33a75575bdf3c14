package agent

import (
	"context"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/agent/grants"
	api "github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/windows"
)

// winTempDir is a temporary directory removed entry by entry: under wine
// (hack/test-windows.sh) os.RemoveAll's handle-based walk fails.
func winTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "lockbox-agent-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		var paths []string
		filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
			if err == nil {
				paths = append(paths, p)
			}
			return nil
		})
		slices.Reverse(paths)
		for _, p := range paths {
			os.Remove(p)
		}
	})
	return dir
}

// reportList keeps every report.
type reportList struct {
	mu  sync.Mutex
	got []*dispatcher.MountReport
}

func (r *reportList) Report(m *dispatcher.MountReport) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, m)
}

func (r *reportList) last() *dispatcher.MountReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) == 0 {
		return nil
	}
	return r.got[len(r.got)-1]
}

// TestLiveUpdateWindowsMounter: the agent with the real Windows mounter
// (under wine in CI) updates a Windows container, claimed without a pid,
// in place: the file its link names reads the new secret, also after an
// agent restart (the mount recovered from the state directory).
func TestLiveUpdateWindowsMounter(t *testing.T) {
	state := winTempDir(t)
	c := grants.NewCache()
	t.Cleanup(c.Close)
	if err := c.Apply(winMsg(dispatcher.SessionMessage_COMPLETE, 1, "v1", "one")); err != nil {
		t.Fatal(err)
	}
	start := func() (*Agent, *reportList) {
		m, err := windows.New(state)
		if err != nil {
			t.Fatal(err)
		}
		rep := &reportList{}
		a, err := New(Config{StateDir: state, Grants: c, Mounter: m, Log: slog.New(slog.DiscardHandler), Reports: rep})
		if err != nil {
			t.Fatal(err)
		}
		return a, rep
	}
	a, rep := start()
	ctx := context.Background()
	if _, _, err := a.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: "w1", Service: "web", Os: "windows", Rootfs: winTempDir(t)}}); err != nil {
		t.Fatal(err)
	}
	src, err := windows.MountSource(state, "w1")
	if err != nil {
		t.Fatal(err)
	}
	// The container's link at db_pw names the file v1 (the secret it
	// started with): what it reads is what that file holds.
	reads := func() string {
		b, err := os.ReadFile(filepath.Join(src, "v1"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := reads(); got != "one" {
		t.Fatalf("before: %q", got)
	}
	for i, step := range []struct{ id, data string }{{"v2", "two"}, {"v3", "three"}} {
		if i == 1 {
			// The agent restarts between the two rotations.
			a.Close()
			a, rep = start()
		}
		if err := c.Apply(winMsg(dispatcher.SessionMessage_INCREMENTAL, uint64(2+i), step.id, step.data)); err != nil {
			t.Fatal(err)
		}
		if due := a.LiveUpdatePass(ctx, time.Now()); !due.IsZero() {
			t.Fatalf("%s: retry due: %v", step.id, rep.last())
		}
		if got := reads(); got != step.data {
			t.Errorf("%s: the container reads %q, want %q", step.id, got, step.data)
		}
		if r := rep.last(); r.GetEvent() != dispatcher.MountReport_UPDATED || !slices.Equal(r.GetSecretIds(), []string{step.id}) {
			t.Errorf("%s: report %v", step.id, r)
		}
	}
	if err := a.Release(ctx, "w1"); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if _, err := os.Stat(src); !os.IsNotExist(err) {
		t.Errorf("after release the secrets directory: %v", err)
	}
}
