package daemon

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lockbox-project/lockbox/internal/testutil/busybox"
	"github.com/lockbox-project/lockbox/internal/testutil/managertest"
)

// TestKill9HookMode: containers whose secrets an OCI createContainer hook
// attached (the hook runs lockbox-runtime in the container's mount
// namespace). The agent finds the container's process among the hook's
// ancestors and records it with the mount namespace; after a kill -9 the
// restarted agent tells the running container from the one that ended,
// and the poststop hook of the running one releases it through the
// restarted agent.
func TestKill9HookMode(t *testing.T) {
	tm := managertest.Start(t)
	tm.Service("web", tm.Secret("db_pw", []byte("hook-secret")))
	dir := t.TempDir()
	spec := childSpecIn(t, dir, []string{tm.Addr}, tm.WorkerToken())
	c := startChild(t, spec)
	cl := c.client(t)
	waitUntil(t, "the grant", func() bool { return granted(t, cl, "web") })

	hookBin := filepath.Join(t.TempDir(), "lockbox-runtime")
	if out, err := exec.Command("go", "build", "-o", hookBin, "github.com/lockbox-project/lockbox/cmd/lockbox-runtime").CombinedOutput(); err != nil {
		t.Fatalf("build lockbox-runtime: %v\n%s", err, out)
	}
	env := []string{"LOCKBOX_AGENT_SOCKET=" + spec.Socket, "LOCKBOX_HOOK_LOG=" + filepath.Join(dir, "hook.log")}
	hook := func(event string) []specs.Hook {
		return []specs.Hook{{Path: hookBin, Args: []string{hookBin, "hook", event}, Env: env}}
	}
	r := busybox.NewRunc(t)
	for _, id := range []string{"live", "gone"} {
		b, err := busybox.NewBundle(filepath.Join(t.TempDir(), id), busybox.Options{
			Annotations: map[string]string{"lockbox.service": "web"},
			Hooks:       &specs.Hooks{CreateContainer: hook("createContainer"), Poststop: hook("poststop")},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Run(busybox.Context(t), id, b); err != nil {
			hl, _ := os.ReadFile(filepath.Join(dir, "hook.log"))
			t.Fatalf("%v\nhook log:\n%s", err, hl)
		}
	}
	cat := func(id string) string {
		out, _, err := r.Exec(busybox.Context(t), id, "cat", "/run/secrets/db_pw")
		if err != nil {
			return ""
		}
		return out
	}
	if got := cat("live"); got != "hook-secret" {
		t.Fatalf("container reads %q", got)
	}
	var rec struct {
		Pid   int    `json:"pid"`
		MntNS uint64 `json:"mntns"`
	}
	b, err := os.ReadFile(filepath.Join(spec.StateDir, "containers", "live.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rec); err != nil || rec.Pid == 0 || rec.MntNS == 0 {
		t.Fatalf("record of a hook-mode container: %s (%v)", b, err)
	}

	c.kill()
	// With the agent gone, "gone" is deleted: its poststop hook cannot
	// reach the agent, and runc deletes it all the same.
	r.Delete(busybox.Context(t), "gone")
	if got := cat("live"); got != "hook-secret" {
		t.Fatalf("after kill -9 of the agent the container reads %q", got)
	}

	spec.Token = ""
	c2 := startChild(t, spec)
	cl2 := c2.client(t)
	ctx := context.Background()
	list, err := cl2.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetContainers()) != 1 || list.GetContainers()[0].GetId() != "live" {
		t.Fatalf("restarted agent lists %v, want only live", list)
	}
	// The running container's poststop hook releases it through the
	// restarted agent.
	if err := r.Delete(busybox.Context(t), "live"); err != nil {
		t.Fatal(err)
	}
	// The release of an exited container answers before its wipe
	// (agent/release.go): the agent lists it, and keeps its record, until
	// the wipe is done.
	waitUntil(t, "the agent to forget the deleted container", func() bool {
		list, err := cl2.List(ctx)
		return err == nil && len(list.GetContainers()) == 0
	})
	waitUntil(t, "the container's record to go", func() bool {
		ents, err := os.ReadDir(filepath.Join(spec.StateDir, "containers"))
		return err == nil && len(ents) == 0
	})
}
