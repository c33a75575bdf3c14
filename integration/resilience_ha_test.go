//go:build integration && linux

package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/agent/localapi"
	"github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/integration/harness"
	"github.com/lockbox-project/lockbox/manager/etcd"
)

// haAgents is how many real agents TestHAKillLeaderAgents runs.
const haAgents = 5

// haReconnectBound is what the test asserts for an agent's reconnect after
// the leader's kill. The goal is 2 s (issue 16); the bound is loose so that
// a loaded CI machine does not fail the test on time alone: the measured
// figures are logged for docs/reliability.md.
const haReconnectBound = 30 * time.Second

// Three real managers (the first bootstraps, the other two join with
// single-use manager join tokens, each on a loopback address of its own;
// etcd leadership is moved to one of the joined two) and five real agents
// that know all three, all with their session on the etcd leader. The leader is killed with SIGKILL. Each agent's reconnect
// time is read from its own log: the time of its first "session with
// manager up" line after the kill (the agent logs it when the first
// message of a new session, the complete set, is applied), less the kill's
// time; the line must name a surviving manager. Then a secret is added to
// the service through a survivor, and every agent must hold exactly the
// service's four targets (each once, none lost, asked through its local
// API), and a claiming container started through the shim on one of the
// agents reads all four secrets and sees nothing else in /run/secrets.
func TestHAKillLeaderAgents(t *testing.T) {
	bin := harness.LockboxBin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	m1 := harness.StartManagerWith(t, bin, harness.ManagerOptions{Addr: harness.FreeAddrOn(t, "127.0.0.1")})
	m2 := harness.StartManagerWith(t, bin, harness.ManagerOptions{Addr: harness.FreeAddrOn(t, "127.0.0.2"), Join: m1})
	m3 := harness.StartManagerWith(t, bin, harness.ManagerOptions{Addr: harness.FreeAddrOn(t, "127.0.0.3"), Join: m1})
	managers := []*harness.Manager{m1, m2, m3}

	secrets := map[string]string{"s1": "one-1", "s2": "two-22", "s3": "three-333", "s4": "four-added-after-failover"}
	for _, name := range []string{"s1", "s2", "s3", "s4"} {
		if _, err := m1.CLIStdin(ctx, []byte(secrets[name]), "secret", "create", name, "-"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m1.CLI(ctx, "service", "create", "web",
		"--secret", "source=s1", "--secret", "source=s2", "--secret", "source=s3"); err != nil {
		t.Fatal(err)
	}

	// A fresh cluster keeps its first member as leader: leadership is
	// moved to one of the joined managers, picked at random, so that the
	// manager killed is not always the bootstrapping one the agents'
	// tokens come from.
	leader := moveLeader(t, ctx, managers, managers[1+rand.IntN(2)])
	// The leader first: every agent's first session is on it. The others
	// follow in a different order per agent.
	var survivors []*harness.Manager
	for _, m := range managers {
		if m != leader {
			survivors = append(survivors, m)
		}
	}
	agents := make([]*harness.Agent, haAgents)
	for i := range agents {
		list := []string{leader.Addr, survivors[i%2].Addr, survivors[(i+1)%2].Addr}
		agents[i] = harness.StartAgentWith(t, bin, m1, harness.AgentOptions{
			Managers: list, Extra: []string{"--log-format", "json"}})
	}
	for i, a := range agents {
		a.WaitUntil(t, "a session on the leader", func() error {
			ups := sessionsUp(t, a.LogPath)
			if len(ups) == 0 {
				return fmt.Errorf("no session yet")
			}
			if ups[0].Manager != leader.Addr {
				t.Fatalf("agent %d's first session is on %s, not on the leader %s", i, ups[0].Manager, leader.Addr)
			}
			return nil
		})
	}
	before := []string{"/run/secrets/s1", "/run/secrets/s2", "/run/secrets/s3"}
	waitTargets(t, ctx, agents, before)

	// The container proof runs on agent 0, through the shim.
	c := harness.StartContainerd(t, harness.Options{ShimDir: bin, Env: []string{"LOCKBOX_AGENT_SOCKET=" + agents[0].Socket}})
	c.Import("default", harness.ImageConfig{Name: busybox})
	runs := 0
	run := func(cmd ...string) (string, error) {
		runs++
		args := append(append(c.ShimRunArgs(shimRuntime), "--annotation", "lockbox.service=web",
			busybox, fmt.Sprintf("ha%d", runs)), cmd...)
		return c.Ctr(ctx, "default", args...)
	}
	if out, err := run("cat", "/run/secrets/s1"); err != nil || out != secrets["s1"] {
		t.Fatalf("claiming container before the kill: %v: %q", err, out)
	}

	// Leadership may have moved since the agents started (it should not on
	// a quiet cluster): the kill is of the leader, checked again now.
	if now := etcdLeaderOf(t, ctx, managers); now != leader {
		t.Fatalf("the etcd leader moved from %s to %s before the kill", leader.Addr, now.Addr)
	}
	killedAt := time.Now()
	leader.Kill()
	t.Logf("killed the etcd leader %s (SIGKILL)", leader.Addr)

	// Each agent's reconnect, from its log.
	took := make([]time.Duration, len(agents))
	for i, a := range agents {
		deadline := time.Now().Add(haReconnectBound + 5*time.Second)
		for {
			var up *sessionUp
			for _, u := range sessionsUp(t, a.LogPath) {
				if u.Time.After(killedAt) {
					up = &u
					break
				}
			}
			if up != nil {
				if up.Manager == leader.Addr {
					t.Fatalf("agent %d's new session is on the killed manager %s", i, up.Manager)
				}
				took[i] = up.Time.Sub(killedAt)
				// What the agent went through: each failed attempt, by
				// manager, with when it ended.
				var tries []string
				for _, e := range sessionLines(t, a.LogPath, "session with manager ended; grants held stay served") {
					if e.Time.After(killedAt) && !e.Time.After(up.Time) {
						tries = append(tries, fmt.Sprintf("%s at +%v (%.60s)", e.Manager, e.Time.Sub(killedAt).Round(time.Millisecond), e.Err))
					}
				}
				t.Logf("agent %d: session up on %s %v after the kill (first message %s); sessions ended before it: %v",
					i, up.Manager, took[i].Round(time.Millisecond), up.Type, tries)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("agent %d: no new session within %v of the kill; log:\n%s", i, haReconnectBound+5*time.Second, readTail(a.LogPath))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	sorted := slices.Clone(took)
	slices.Sort(sorted)
	p50, worst := sorted[len(sorted)/2], sorted[len(sorted)-1]
	t.Logf("reconnect after the leader's kill, %d agents: p50 %v, max %v (goal 2 s); all: %v",
		len(agents), p50.Round(time.Millisecond), worst.Round(time.Millisecond), roundAll(took))
	if worst > haReconnectBound {
		t.Errorf("an agent took %v to reconnect (bound %v, goal 2 s)", worst, haReconnectBound)
	}

	// A service update through a survivor (retried: etcd refuses writes
	// until the election ends).
	updateAt := time.Now()
	var err error
	for {
		_, err = survivors[0].CLI(ctx, "service", "update", "web", "--secret-add", "source=s4")
		if err == nil || time.Since(updateAt) > time.Minute {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	after := append(slices.Clone(before), "/run/secrets/s4")
	waitTargets(t, ctx, agents, after)
	t.Logf("the update made through %s reached all %d agents %v after it was made",
		survivors[0].Addr, len(agents), time.Since(updateAt).Round(time.Millisecond))

	// The strongest proof, on agent 0: a claiming container reads every
	// secret, and /run/secrets holds those four and nothing else.
	out, err := run("sh", "-c", "for f in s1 s2 s3 s4; do cat /run/secrets/$f; echo; done; ls /run/secrets")
	want := fmt.Sprintf("%s\n%s\n%s\n%s\ns1\ns2\ns3\ns4\n", secrets["s1"], secrets["s2"], secrets["s3"], secrets["s4"])
	if err != nil || out != want {
		t.Fatalf("claiming container after the failover: %v:\n%q\nwant\n%q", err, out, want)
	}
	// Nothing left held on any agent once the containers are gone.
	for i, a := range agents {
		if held, err := a.ListReleased(ctx); err != nil || len(held) != 0 {
			t.Errorf("agent %d holds %v (%v) after every container was removed", i, held, err)
		}
	}
}

// etcdLeaderOf asks each running manager's embedded etcd member (its
// client socket under the data dir) for its status, and returns the
// manager whose member is the leader. It waits for the members to agree.
func etcdLeaderOf(t *testing.T, ctx context.Context, ms []*harness.Manager) *harness.Manager {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var leader *harness.Manager
		leaders := map[uint64]bool{}
		var last error
		for _, m := range ms {
			if m.Pid() == 0 {
				continue
			}
			id, lead, err := etcdStatus(ctx, m)
			if err != nil {
				last = err
				continue
			}
			leaders[lead] = true
			if id == lead {
				leader = m
			}
		}
		if last == nil && leader != nil && len(leaders) == 1 {
			return leader
		}
		if time.Now().After(deadline) {
			t.Fatalf("no etcd leader the members agree on (%v, %d leaders seen)", last, len(leaders))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// moveLeader makes to's etcd member the leader (etcd's leadership
// transfer, asked of the current leader) and returns to once every member
// agrees.
func moveLeader(t *testing.T, ctx context.Context, ms []*harness.Manager, to *harness.Manager) *harness.Manager {
	t.Helper()
	from := etcdLeaderOf(t, ctx, ms)
	if from == to {
		return to
	}
	toID, _, err := etcdStatus(ctx, to)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	ep := "unix://" + etcd.ClientSocket(filepath.Join(from.DataDir, "etcd"))
	cli, err := etcd.Connect(cctx, []string{ep}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.MoveLeader(cctx, toID); err != nil {
		t.Fatalf("move etcd leadership from %s to %s: %v", from.Addr, to.Addr, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if now := etcdLeaderOf(t, ctx, ms); now == to {
			return to
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd leadership did not move to %s", to.Addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// etcdStatus is the member ID and the leader's member ID as m's member
// sees them.
func etcdStatus(ctx context.Context, m *harness.Manager) (id, leader uint64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ep := "unix://" + etcd.ClientSocket(filepath.Join(m.DataDir, "etcd"))
	cli, err := etcd.Connect(ctx, []string{ep}, nil)
	if err != nil {
		return 0, 0, err
	}
	defer cli.Close()
	st, err := cli.Status(ctx, ep)
	if err != nil {
		return 0, 0, err
	}
	return st.Header.GetMemberId(), st.Leader, nil
}

// sessionUp is an agent's "session with manager up" log line.
type sessionUp struct {
	Time    time.Time `json:"time"`
	Msg     string    `json:"msg"`
	Manager string    `json:"manager"`
	Err     string    `json:"err"`
	// Type is the first message's: INCREMENTAL when the new manager
	// resumed from the revision the agent held, COMPLETE when it sent the
	// whole set again.
	Type string `json:"type"`
}

// sessionsUp reads an agent's JSON log for its "session with manager up"
// lines, in order.
func sessionsUp(t *testing.T, path string) []sessionUp {
	t.Helper()
	return sessionLines(t, path, "session with manager up")
}

// sessionLines reads an agent's JSON log for its lines with message msg,
// in order.
func sessionLines(t *testing.T, path, msg string) []sessionUp {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ups []sessionUp
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l sessionUp
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == msg {
			ups = append(ups, l)
		}
	}
	return ups
}

// waitTargets waits until every agent answers that a container claiming
// "web" gets exactly want (sorted, each once).
func waitTargets(t *testing.T, ctx context.Context, agents []*harness.Agent, want []string) {
	t.Helper()
	for i, a := range agents {
		a.WaitUntil(t, fmt.Sprintf("targets %v", want), func() error {
			got, err := agentTargets(ctx, a)
			if err != nil {
				return err
			}
			if !slices.Equal(got, want) {
				return fmt.Errorf("agent %d: targets %v, want %v", i, got, want)
			}
			return nil
		})
	}
}

// agentTargets asks the agent, through its local API, which targets a
// container claiming "web" would get.
func agentTargets(ctx context.Context, a *harness.Agent) ([]string, error) {
	c, err := localapi.Dial(a.Socket)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	resp, err := c.Targets(ctx, &agent.TargetsRequest{Container: &agent.Container{
		Id: "ha-probe", Service: "web", Os: "linux", Rootfs: "/"}})
	if err != nil {
		return nil, err
	}
	got := slices.Clone(resp.GetTargets())
	sort.Strings(got)
	return got, nil
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

// readTail is the end of a log file, for a failure message.
func readTail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return strings.TrimSpace(string(b))
}
