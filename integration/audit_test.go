//go:build integration && linux

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/integration/harness"
)

// TestAuditStory: the managers' audit log tells the whole story of a
// secret, from real parts: the secret's create by the admin, the grant to
// the node, the agent's mount into a container started through the shim,
// and the wipe at its delete. No entry holds the secret's data.
func TestAuditStory(t *testing.T) {
	bin := harness.LockboxBin(t)
	m, a := e2eSetup(t, bin)
	c := harness.StartContainerd(t, harness.Options{ShimDir: bin, Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
	c.Import("default", harness.ImageConfig{Name: busybox})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	const id = "lbx-audited"
	a.WaitUntil(t, "a claiming container through the shim", func() error {
		args := append(c.ShimRunArgs(shimRuntime), "--annotation", "lockbox.service=web", busybox, id, "true")
		out, err := c.Ctr(ctx, "default", args...)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})

	type entry struct {
		Actor, Action, Object, Node, Container string
		Secrets                                []string
	}
	var log []entry
	raw := ""
	// Mount and wipe reports ride the agent's heartbeats.
	waitCond(t, "the mount and wipe in the audit log", func() error {
		out, err := m.CLI(ctx, "audit", "ls", "--format", "json")
		if err != nil {
			return err
		}
		raw = out
		log = log[:0]
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var e entry
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				return fmt.Errorf("%v: %q", err, line)
			}
			log = append(log, e)
		}
		for _, want := range []string{"mount", "wipe"} {
			found := false
			for _, e := range log {
				found = found || (e.Action == want && e.Container == id)
			}
			if !found {
				return fmt.Errorf("no %s entry for %s yet", want, id)
			}
		}
		return nil
	})
	has := func(action, object string) entry {
		t.Helper()
		for _, e := range log {
			if e.Action == action && strings.Contains(e.Object, object) {
				return e
			}
		}
		t.Fatalf("no %s of %s in the audit log:\n%s", action, object, raw)
		return entry{}
	}
	if e := has("secret.create", "db_pw"); e.Actor != "local root" {
		t.Errorf("secret.create by %q, want local root", e.Actor)
	}
	if e := has("grant", "web"); !strings.HasPrefix(e.Actor, "manager ") || e.Node == "" {
		t.Errorf("grant %+v: want a manager's grant to a node", e)
	}
	mount := has("mount", "web")
	if !strings.HasPrefix(mount.Actor, "node ") || mount.Container != id || !strings.Contains(strings.Join(mount.Secrets, ","), "db_pw") {
		t.Errorf("mount %+v: want the node's report of %s getting db_pw", mount, id)
	}
	if e := has("wipe", "web"); e.Container != id {
		t.Errorf("wipe %+v: want %s", e, id)
	}
	for _, data := range []string{"hunter2-db", "api-key-bytes", "PEM-BYTES"} {
		if strings.Contains(raw, data) {
			t.Errorf("the audit log holds secret data %q", data)
		}
	}
}
