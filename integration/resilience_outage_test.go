//go:build integration && linux

package integration

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/integration/harness"
)

// outageFor is how long TestAllManagersDown keeps every manager stopped:
// 20 s in make integration (part of make test), LOCKBOX_OUTAGE (a Go
// duration) for longer runs; make test-resilience sets 60s.
func outageFor(t *testing.T) time.Duration {
	d := 20 * time.Second
	if s := os.Getenv("LOCKBOX_OUTAGE"); s != "" {
		v, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("LOCKBOX_OUTAGE=%q: %v", s, err)
		}
		d = v
	}
	return d
}

// Every manager down (issue 16): the cluster's only manager is stopped
// (SIGTERM: its port refuses connections, unlike TestPartition's silence)
// for a real outage (outageFor). A claiming container started before
// the outage reads its secret again at its end; new claiming containers
// start from the agent's memory at its start and at its end. The manager
// then starts again on the same data directory and address; the agent
// reconnects on its own, and a service update made after the restart
// reaches it. Why ten minutes would be the same is in docs/reliability.md.
func TestAllManagersDown(t *testing.T) {
	bin := harness.LockboxBin(t)
	m := harness.StartManager(t, bin)
	outage := outageFor(t)
	ctx, cancel := context.WithTimeout(context.Background(), outage+5*time.Minute)
	defer cancel()
	if _, err := m.CLIStdin(ctx, []byte("hunter2-db"), "secret", "create", "db_pw", "-"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.CLI(ctx, "service", "create", "web", "--secret", "source=db_pw"); err != nil {
		t.Fatal(err)
	}
	a := harness.StartAgent(t, bin, m)
	c := harness.StartContainerd(t, harness.Options{ShimDir: bin, Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
	c.Import("default", harness.ImageConfig{Name: busybox})

	runs := 0
	run := func(id string, cmd ...string) (string, error) {
		if id == "" {
			runs++
			id = fmt.Sprintf("down%d", runs)
		}
		args := append(append(c.ShimRunArgs(shimRuntime), "--annotation", "lockbox.service=web", busybox, id), cmd...)
		return c.Ctr(ctx, "default", args...)
	}
	cat := func(file string) (string, error) { return run("", "cat", "/run/secrets/"+file) }
	a.WaitUntil(t, "the web service's grants", func() error {
		out, err := cat("db_pw")
		if err == nil && out != "hunter2-db" {
			t.Fatalf("db_pw reads %q", out)
		}
		return err
	})

	// The running container: it reads its secret now and again after the
	// outage, the manager still down.
	type result struct {
		out string
		err error
	}
	long := make(chan result, 1)
	go func() {
		out, err := run("running", "sh", "-c", fmt.Sprintf("cat /run/secrets/db_pw; echo; sleep %d; cat /run/secrets/db_pw", int(outage.Seconds())+5))
		long <- result{out, err}
	}()
	a.WaitUntil(t, "the running container's claim", func() error {
		ids, err := a.List(ctx)
		if err == nil && len(ids) == 0 {
			err = fmt.Errorf("the agent holds no container yet")
		}
		return err
	})

	m.Stop()
	downAt, runsBefore := time.Now(), runs
	start := time.Now()
	if out, err := cat("db_pw"); err != nil || out != "hunter2-db" {
		t.Fatalf("claiming container as the outage began: %v: %q", err, out)
	}
	t.Logf("every manager down: a new claiming container started and read its secret %v into the outage (%v)",
		time.Since(downAt).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if rest := outage - time.Since(downAt); rest > 0 {
		time.Sleep(rest) // the outage itself is what is under test
	}
	if out, err := cat("db_pw"); err != nil || out != "hunter2-db" {
		t.Fatalf("claiming container at the end of a %v outage: %v: %q", outage, err, out)
	}
	select {
	case r := <-long:
		if r.err != nil || r.out != "hunter2-db\nhunter2-db" {
			t.Fatalf("the container running across the outage: %v: %q", r.err, r.out)
		}
	case <-time.After(time.Minute):
		t.Fatal("the container running across the outage did not finish")
	}
	t.Logf("outage %v: the container running across it read its secret before it and %v after the stop, and %d new claiming containers started during it",
		outage, time.Since(downAt).Round(time.Second), runs-runsBefore)

	// The manager comes back on its data directory and address.
	m.Proc = harness.StartProc(t, "lockbox manager", m.LogPath+".restarted", m.Bin,
		"manager", "--data-dir", m.DataDir, "--listen", m.Addr, "--admin-socket", m.AdminSocket)
	restarted := time.Now()
	for {
		if _, err := m.CLIStdin(ctx, []byte("added-after"), "secret", "create", "late", "-"); err == nil {
			break
		} else if time.Since(restarted) > time.Minute {
			t.Fatalf("the restarted manager's admin API: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := m.CLI(ctx, "service", "update", "web", "--secret-add", "source=late"); err != nil {
		t.Fatal(err)
	}
	updated := time.Now()
	const converge = 60 * time.Second
	for {
		out, err := cat("late")
		if err == nil {
			if out != "added-after" {
				t.Fatalf("late reads %q", out)
			}
			break
		}
		if time.Since(updated) > converge {
			t.Fatalf("the update after the manager's return did not reach the agent within %v: %v", converge, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("manager back %v after it stopped; the service update made then reached the agent %v later (%d container runs in all)",
		restarted.Sub(downAt).Round(time.Millisecond), time.Since(updated).Round(time.Millisecond), runs+1)
	if held, err := a.List(ctx); err != nil || len(held) != 0 {
		t.Errorf("agent holds %v (%v) after every container was removed", held, err)
	}
}
