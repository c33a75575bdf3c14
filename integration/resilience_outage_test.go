//go:build integration && linux

package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lockbox-project/lockbox/integration/harness"
)

// outageFor is how long TestAllManagersDown keeps every manager down;
// LOCKBOX_OUTAGE (a Go duration) sets it for longer runs (10m for issue
// 16's figure).
func outageFor(t *testing.T) time.Duration {
	d := 30 * time.Second
	if s := os.Getenv("LOCKBOX_OUTAGE"); s != "" {
		v, err := time.ParseDuration(s)
		if err != nil || v <= 0 {
			t.Fatalf("LOCKBOX_OUTAGE=%q: want a positive Go duration (%v)", s, err)
		}
		d = v
	}
	return d
}

// outageRunning is how many claiming containers run through the outage.
const outageRunning = 3

// outageSecrets are the files of the web service (e2eSetup) and what each
// holds.
var outageSecrets = map[string]string{
	"/run/secrets/db_pw":   "hunter2-db",
	"/run/secrets/app/key": "api-key-bytes",
	"/etc/app/tls.pem":     "PEM-BYTES",
}

// All managers down (issue 16): the cluster's only manager is killed
// (kill -9, a real outage: connections refused, not a partition's silence)
// for LOCKBOX_OUTAGE (30 s by default). Throughout, checked every tenth
// of the outage (5 s apart at least) and at its end: the claiming containers that were running keep reading all
// their secrets, and a NEW claiming container starts through the shim and
// reads all of its own, served from the agent's memory. The agent's fds do
// not grow with its redials. After the manager restarts on the same data
// dir, the agent's session comes back (its log says so) and a service
// update made then reaches it. docs/reliability.md argues why ten minutes
// and longer hold the same.
func TestAllManagersDown(t *testing.T) {
	outage := outageFor(t)
	bin := harness.LockboxBin(t)
	// The agent logs JSON: the test reads it for its session's ends and
	// returns.
	m, a := webSetup(t, bin, map[string]string{"late": "added-after-the-outage"}, "--log-format", "json")
	ctx, cancel := context.WithTimeout(context.Background(), outage+5*time.Minute)
	defer cancel()
	c := harness.StartContainerd(t, harness.Options{ShimDir: bin, Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
	c.Import("default", harness.ImageConfig{Name: busybox})

	runs := 0
	// fresh runs a new claiming container to completion: it prints every
	// secret of the web service (and whether "late" is there).
	fresh := func() (string, error) {
		runs++
		args := append(c.ShimRunArgs(shimRuntime), "--annotation", "lockbox.service=web", busybox,
			fmt.Sprintf("od-new%d", runs), "sh", "-c",
			"cat /run/secrets/db_pw /run/secrets/app/key /etc/app/tls.pem; [ -e /run/secrets/late ] && cat /run/secrets/late || true")
		return c.Ctr(ctx, "default", args...)
	}
	const want = "hunter2-dbapi-key-bytesPEM-BYTES"
	a.WaitUntil(t, "the web service's grants", func() error {
		out, err := fresh()
		if err == nil && out != want {
			t.Fatalf("a claiming container reads %q", out)
		}
		return err
	})

	var pids []int
	for i := range outageRunning {
		id := fmt.Sprintf("od-run%d", i)
		if out, err := c.Ctr(ctx, "default", "run", "-d", "--runtime", shimRuntime, "--fifo-dir", c.FifoDir,
			"--annotation", "lockbox.service=web", busybox, id, "sleep", "86400"); err != nil {
			t.Fatalf("start %s: %v: %s", id, err, out)
		}
		pids = append(pids, taskPid(ctx, t, c, id))
	}
	readRunning := func(when string) {
		t.Helper()
		for i, pid := range pids {
			for file, data := range outageSecrets {
				b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root%s", pid, file))
				if err != nil || string(b) != data {
					t.Fatalf("running container od-run%d, %s: %s: %v: %q", i, when, file, err, b)
				}
			}
		}
	}
	readRunning("before the outage")
	fdsBefore, memBefore := agentFDs(t, a), readSmaps(t, a.Pid())

	const endedMsg = "session with manager ended; grants held stay served"
	endedBefore := len(sessionLines(t, a.LogPath, endedMsg))
	m.Kill()
	downAt := time.Now()
	if conn, err := net.DialTimeout("tcp", m.Addr, time.Second); err == nil {
		conn.Close()
		t.Fatalf("the manager's address %s still accepts connections after the kill", m.Addr)
	}
	// The agent has seen its session end: the outage is real to it.
	waitCond(t, "the agent to log its session's end", func() error {
		if len(sessionLines(t, a.LogPath, endedMsg)) == endedBefore {
			return fmt.Errorf("no session end logged since the kill")
		}
		return nil
	})

	// Probe every tenth of the outage (5 s apart at least), and once more
	// at its end.
	every := max(outage/10, 5*time.Second)
	probes, slowest := 0, time.Duration(0)
	probe := func() {
		t.Helper()
		into := time.Since(downAt).Round(time.Millisecond)
		readRunning(fmt.Sprintf("%v into the outage", into))
		start := time.Now()
		out, err := fresh()
		if err != nil || out != want {
			t.Fatalf("a new claiming container %v into the outage: %v: %q", into, err, out)
		}
		slowest = max(slowest, time.Since(start))
		probes++
	}
	for next := downAt; time.Until(downAt.Add(outage)) > 0; next = next.Add(every) {
		if d := time.Until(next); d > 0 {
			time.Sleep(d) // the outage itself is what is under test
		}
		probe()
	}
	if d := time.Until(downAt.Add(outage)); d > 0 {
		time.Sleep(d)
	}
	probe()
	fdsAfter, memAfter := agentFDs(t, a), readSmaps(t, a.Pid())
	// Each failed attempt (the stream's end, then every refused redial)
	// logs one line.
	ended := len(sessionLines(t, a.LogPath, endedMsg)) - endedBefore
	t.Logf("all managers down %v: %d probes, each the %d running containers' secrets read and a new claiming container started and read its own (slowest start to exit %v); the agent redialled %d times; agent fds %d -> %d, Anonymous %d -> %d kB",
		time.Since(downAt).Round(time.Millisecond), probes, len(pids), slowest.Round(time.Millisecond), ended, fdsBefore, fdsAfter, memBefore.anon, memAfter.anon)
	// A redial that failed keeps nothing open: one in flight may hold a
	// socket or two when counted.
	if fdsAfter > fdsBefore+2 {
		t.Errorf("the agent's fds grew from %d to %d over the outage (%d redials)", fdsBefore, fdsAfter, ended)
	}

	upBefore := len(sessionsUp(t, a.LogPath))
	m.Restart(t)
	upAt := time.Now()
	if _, err := m.CLI(ctx, "service", "update", "web", "--secret-add", "source=late"); err != nil {
		t.Fatal(err)
	}
	updatedAt := time.Now()
	const converge = 60 * time.Second
	for {
		out, err := fresh()
		if err == nil && out == want+"added-after-the-outage" {
			break
		}
		if err == nil && out != want {
			t.Fatalf("a claiming container after the manager's return reads %q", out)
		}
		if time.Since(updatedAt) > converge {
			t.Fatalf("the update made after the manager's return did not reach the agent in %v: %v: %q\nagent log:\n%s",
				converge, err, out, readTail(a.LogPath))
		}
		time.Sleep(100 * time.Millisecond)
	}
	reached := time.Since(updatedAt)
	ups := sessionsUp(t, a.LogPath)
	if len(ups) <= upBefore {
		t.Fatalf("the update arrived but the agent logged no new session")
	}
	up := ups[len(ups)-1]
	t.Logf("manager back %v after the kill (its admin API answering); the agent's session up %v after that (first message %s); the update made then reached the agent %v after it was made",
		upAt.Sub(downAt).Round(time.Millisecond), up.Time.Sub(upAt).Round(time.Millisecond), up.Type, reached.Round(time.Millisecond))
	readRunning("after the outage")

	for i, pid := range pids {
		stopAndRemove(ctx, t, c, fmt.Sprintf("od-run%d", i))
		if unix.Kill(pid, 0) == nil {
			t.Errorf("od-run%d's init %d still runs after its removal", i, pid)
		}
	}
	if err := holds(ctx, a, 0); err != nil {
		t.Error(err)
	}
}

// webSetup is e2eSetup's manager and web service (db_pw, app/key,
// /etc/app/tls.pem), with more secrets created (not granted), and an agent
// started with extra flags.
func webSetup(t *testing.T, bin string, more map[string]string, extra ...string) (*harness.Manager, *harness.Agent) {
	t.Helper()
	m := harness.StartManager(t, bin)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	secrets := map[string]string{"db_pw": "hunter2-db", "api_key": "api-key-bytes", "tls": "PEM-BYTES"}
	for name, data := range more {
		secrets[name] = data
	}
	for name, data := range secrets {
		if _, err := m.CLIStdin(ctx, []byte(data), "secret", "create", name, "-"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.CLI(ctx, "service", "create", "web", "--secret", "source=db_pw",
		"--secret", "source=api_key,target=app/key,uid=1000,gid=1000,mode=0400",
		"--secret", "source=tls,target=/etc/app/tls.pem,mode=0440"); err != nil {
		t.Fatal(err)
	}
	return m, harness.StartAgentWith(t, bin, m, harness.AgentOptions{Extra: extra})
}
