//go:build integration && linux

package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/integration/harness"
)

// partitionFor is how long TestPartition keeps the agent cut off;
// LOCKBOX_PARTITION (a Go duration) sets it for longer runs.
func partitionFor(t *testing.T) time.Duration {
	d := 20 * time.Second
	if s := os.Getenv("LOCKBOX_PARTITION"); s != "" {
		v, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("LOCKBOX_PARTITION=%q: %v", s, err)
		}
		d = v
	}
	return d
}

// A network partition between an agent and its manager (issue 16): the
// manager runs in one network namespace and the agent in another, joined
// only by a veth pair the test creates (10.254.1.0/30, nothing on the
// host's own interfaces). With the link down the agent serves from memory:
// a new claiming container starts through the shim (on a containerd in the
// host's namespace: the agent's local socket is a unix socket, which the
// partition does not touch) and reads its secret. A secret added to the
// service on the manager meanwhile reaches the agent once the link is back:
// the catch-up time is logged.
func TestPartition(t *testing.T) {
	bin := harness.LockboxBin(t)
	n := harness.NewNetnsPair(t, "part", 1)
	m := harness.StartManagerWith(t, bin, harness.ManagerOptions{Prefix: harness.NetnsExec(n.A), Addr: n.IPA + ":7443"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for name, data := range map[string]string{"db_pw": "hunter2-db", "late": "added-while-cut-off"} {
		if _, err := m.CLIStdin(ctx, []byte(data), "secret", "create", name, "-"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.CLI(ctx, "service", "create", "web", "--secret", "source=db_pw"); err != nil {
		t.Fatal(err)
	}
	a := harness.StartAgentWith(t, bin, m, harness.AgentOptions{Prefix: harness.NetnsExec(n.B)})
	c := harness.StartContainerd(t, harness.Options{ShimDir: bin, Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
	c.Import("default", harness.ImageConfig{Name: busybox})

	runs := 0
	run := func(cmd ...string) (string, error) {
		runs++
		args := append(append(c.ShimRunArgs(shimRuntime), "--annotation", "lockbox.service=web",
			busybox, fmt.Sprintf("part%d", runs)), cmd...)
		return c.Ctr(ctx, "default", args...)
	}
	cat := func(file string) (string, error) { return run("cat", "/run/secrets/"+file) }
	a.WaitUntil(t, "the web service's grants", func() error {
		out, err := cat("db_pw")
		if err == nil && out != "hunter2-db" {
			t.Fatalf("db_pw reads %q", out)
		}
		return err
	})
	if !reachable(n.B, n.IPA+":7443") {
		t.Fatal("the manager is not reachable from the agent's namespace before the cut")
	}

	n.Cut(t)
	cutAt := time.Now()
	if reachable(n.B, n.IPA+":7443") {
		t.Fatal("the manager is still reachable from the agent's namespace after the cut")
	}
	if _, err := m.CLI(ctx, "service", "update", "web", "--secret-add", "source=late"); err != nil {
		t.Fatal(err)
	}
	// Served from memory: the grant held before the cut. The update cannot
	// have arrived: the container sees the old set.
	start := time.Now()
	out, err := run("sh", "-c", "cat /run/secrets/db_pw; [ -e /run/secrets/late ] && echo ' late is here' || echo ' no late'")
	if err != nil || out != "hunter2-db no late\n" {
		t.Fatalf("claiming container during the partition: %v: %q", err, out)
	}
	t.Logf("a new claiming container started and read its secret %v into the partition (%v)",
		time.Since(cutAt).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if rest := partitionFor(t) - time.Since(cutAt); rest > 0 {
		time.Sleep(rest) // the outage itself is what is under test
	}
	// Still serving at the end of the outage.
	if out, err := cat("db_pw"); err != nil || out != "hunter2-db" {
		t.Fatalf("claiming container at the end of the partition: %v: %q", err, out)
	}

	n.Restore(t)
	restored := time.Now()
	const converge = 60 * time.Second
	var last error
	for {
		out, err := cat("late")
		if err == nil {
			if out != "added-while-cut-off" {
				t.Fatalf("late reads %q", out)
			}
			break
		}
		last = err
		if time.Since(restored) > converge {
			t.Fatalf("the update made during a %v partition did not reach the agent within %v of the link's return: %v",
				restored.Sub(cutAt).Round(time.Second), converge, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("partition %v; the service update made during it reached the agent %v after the link came back (%d container runs in all)",
		restored.Sub(cutAt).Round(time.Millisecond), time.Since(restored).Round(time.Millisecond), runs)
	if held, err := a.ListReleased(ctx); err != nil || len(held) != 0 {
		t.Errorf("agent holds %v (%v) after every container was removed", held, err)
	}
}

// reachable reports whether a TCP connection to addr succeeds within a
// second from network namespace ns.
func reachable(ns, addr string) bool {
	host, port, _ := strings.Cut(addr, ":")
	cmd := exec.Command("nsenter", append(harness.NetnsExec(ns)[1:], "timeout", "1", "bash", "-c",
		fmt.Sprintf("exec 3<>/dev/tcp/%s/%s", host, port))...)
	return cmd.Run() == nil
}
