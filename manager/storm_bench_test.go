//go:build linux

package manager

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/internal/testutil/benchinfo"
	"github.com/lockbox-project/lockbox/internal/testutil/procmem"
	"github.com/lockbox-project/lockbox/pki"
)

// BenchmarkReconnectStorm: N simulated agents (real TLS connections and
// Session streams from this process, dialled with the agents' transport
// options) hold sessions with a manager in a child process; the manager is
// killed (SIGKILL, as in a crash) and started again on the same data
// directory, and every agent reconnects on its own, as lockbox agent does:
// a new connection per attempt, paced by the agents' own reconnect policy
// (api/dispatcher.Backoff, which agent/session uses). Measured: the time from the restart until every agent
// holds a complete snapshot again (its first message of the new session:
// COMPLETE with every grant, or INCREMENTAL resuming from the revision it
// held), the spread of those times, the failed attempts, and the manager's
// peak RSS (VmHWM) over its new life. Two restarts a run: agents that
// resume (what they do after a restart: the manager still has the
// history) and agents that start over (each needs a COMPLETE snapshot:
// a manager that lost the history, or agents that restarted too); with
// -count 2 the second run starts with the other. Baseline, same run: the
// manager's own restart, from start to ready, with no agent connected.
//
// LOCKBOX_BENCH_STORM_SERVICES (default 10) services, each with one 1 KiB
// secret, are placed on every node. 10,000 agents need LOCKBOX_BENCH_10K=1.
// LOCKBOX_BENCH_CPUPROFILE=dir profiles each restarted manager's storm.
func BenchmarkReconnectStorm(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) {
			if n == 10000 && os.Getenv("LOCKBOX_BENCH_10K") == "" {
				b.Skip("set LOCKBOX_BENCH_10K=1: 10,000 TLS agents take minutes on 2 cores")
			}
			for i := 0; i < b.N; i++ {
				benchStorm(b, n)
			}
		})
	}
}

// stormRuns counts the runs of benchStorm by number of agents (-count).
var stormRuns = map[int]int{}

// stormAgent is a simulated agent that keeps a session up.
type stormAgent struct {
	nd   node
	addr string
	// fresh makes the next session start over (resume revision 0).
	fresh atomic.Bool
	rev   atomic.Uint64
	// firstAt is when the current session's first message arrived (unix
	// nanoseconds), 0 while the agent has none.
	firstAt atomic.Int64
	// dialAt is when the attempt that brought the current session's first
	// message started (unix nanoseconds): how long after the manager was
	// ready the agent's backoff let it dial.
	dialAt   atomic.Int64
	attempts atomic.Int64
	bad      atomic.Value // string: a first message that was not complete
}

// run keeps a session up until ctx ends. want is the number of changes a
// COMPLETE message must carry.
func (a *stormAgent) run(ctx context.Context, want int) {
	cfg, err := pki.ClientTLSFromPEM(a.nd.root, a.nd.cert)
	if err != nil {
		a.bad.Store(err.Error())
		return
	}
	// The agents' own reconnect policy. LOCKBOX_BENCH_STORM_MAX_UNREACHED
	// (a duration) overrides its cap for attempts that reached no manager,
	// to compare with agents that back off from a missing one all the way.
	var backoff dapi.Backoff
	if d, err := time.ParseDuration(os.Getenv("LOCKBOX_BENCH_STORM_MAX_UNREACHED")); err == nil {
		backoff.MaxUnreached = d
	}
	for ctx.Err() == nil {
		a.attempts.Add(1)
		delivered, reached := a.once(ctx, cfg, want)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff.Next(delivered, reached)):
		}
	}
}

// once holds one session until it fails; it reports whether a message
// arrived and whether a TCP connection was made.
func (a *stormAgent) once(ctx context.Context, cfg *tls.Config, want int) (delivered, reached bool) {
	var tcp atomic.Bool
	defer func() { reached = tcp.Load() }()
	conn, err := grpc.NewClient(a.addr, append(dapi.Transport{}.DialOptions(),
		grpc.WithTransportCredentials(credentials.NewTLS(cfg)), grpc.WithReadBufferSize(0),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", addr)
			if err == nil {
				tcp.Store(true)
			}
			return c, err
		}))...)
	if err != nil {
		return false, false
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// lockbox agent gives up on a first message after 30 s.
	first := time.AfterFunc(30*time.Second, cancel)
	defer first.Stop()
	dialAt := time.Now().UnixNano()
	resume := a.rev.Load()
	// Until a session of this restart delivers, every attempt starts
	// over (an agent that lost its state keeps none across attempts).
	if a.fresh.Load() {
		resume = 0
	}
	ss, err := dapi.NewDispatcherClient(conn).Session(ctx, &dapi.SessionRequest{Description: &types.NodeDescription{Hostname: "h"}, ResumeRevision: resume, Features: dapi.AgentFeatures()})
	if err != nil {
		failures.note(err)
		return false, false
	}
	m, err := ss.Recv()
	if err != nil {
		failures.note(err)
		return false, false
	}
	first.Stop()
	complete := m.Type == dapi.SessionMessage_COMPLETE && len(m.Changes) == want ||
		m.Type == dapi.SessionMessage_INCREMENTAL && resume != 0
	if !complete {
		a.bad.Store(fmt.Sprintf("first message %v with %d changes (resume %d, want %d)", m.Type, len(m.Changes), resume, want))
	}
	a.fresh.Store(false)
	a.rev.Store(m.Revision)
	a.dialAt.Store(dialAt)
	a.firstAt.Store(time.Now().UnixNano())
	for {
		m, err := ss.Recv()
		if err != nil {
			return true, true
		}
		a.rev.Store(m.Revision)
	}
}

// failures counts why attempts failed before their first message, by
// kind: gRPC code and the first words of the message, digits dropped.
var failures = &failureCount{n: map[string]int{}}

type failureCount struct {
	mu sync.Mutex
	n  map[string]int
}

func (f *failureCount) note(err error) {
	k := strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return -1
		}
		return r
	}, err.Error())
	// The cause is at the end of gRPC's message ("... connect:
	// connection refused"); the code at the start.
	if len(k) > 110 {
		k = k[:40] + " … " + k[len(k)-70:]
	}
	f.mu.Lock()
	f.n[k]++
	f.mu.Unlock()
}

// take returns the counts so far, most first, and starts again.
func (f *failureCount) take() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	type kv struct {
		k string
		n int
	}
	var all []kv
	for k, n := range f.n {
		all = append(all, kv{k, n})
	}
	clear(f.n)
	slices.SortFunc(all, func(a, b kv) int { return b.n - a.n })
	var out []string
	for i, e := range all {
		if i == 4 {
			break
		}
		out = append(out, fmt.Sprintf("%d × %q", e.n, e.k))
	}
	return strings.Join(out, "; ")
}

// listenOverflows is the machine's count of connections a full listen
// queue dropped (TcpExt ListenOverflows): each one is a client whose
// SYN is retransmitted a second or more later. Machine-wide; -1 when
// unknown.
func listenOverflows() int64 {
	data, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		return -1
	}
	lines := strings.Split(string(data), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "TcpExt:" || len(values) != len(names) {
			continue
		}
		for j, name := range names {
			if name == "ListenOverflows" {
				v, _ := strconv.ParseInt(values[j], 10, 64)
				return v
			}
		}
	}
	return -1
}

// vmHWM is the peak RSS of process pid.
func vmHWM(b *testing.B, pid int) int64 { return procmem.Bytes(b, pid, "VmHWM") }

func benchStorm(b *testing.B, n int) {
	b.StopTimer()
	tb := testing.TB(b)
	services := 10
	if v, err := strconv.Atoi(os.Getenv("LOCKBOX_BENCH_STORM_SERVICES")); err == nil && v > 0 {
		services = v
	}
	// LOCKBOX_BENCH_CPUPROFILE=dir: each restarted manager writes a CPU
	// profile of the storm (from ready until every agent holds a
	// snapshot) to dir/storm-<agents>-<variant>.pprof.
	profDir := os.Getenv("LOCKBOX_BENCH_CPUPROFILE")
	cc := newChildConfig(tb, "127.0.0.1")
	cc.MetricsAddr = fmt.Sprintf("127.0.0.1:%d", freePort(tb, "127.0.0.1"))
	// The simulated agents do not heartbeat (see benchGRPC).
	cc.HeartbeatPeriod = time.Hour
	cc.NoUnauthLimit = true
	m := startChild(tb, cc)
	adm := m.admin()
	tok := token(tb, adm, types.NodeRole_NODE_ROLE_WORKER, false)
	for i := 0; i < services; i++ {
		sec := createSecret(tb, adm, fmt.Sprintf("s%d", i), strings.Repeat("x", 1024))
		createService(tb, adm, fmt.Sprintf("svc%d", i), nil, sec)
	}
	nodes := joinNodes(tb, m.addr, tok, n)

	// Baseline: the manager's own restart with no agent connected.
	m.kill()
	t0 := time.Now()
	m = startChild(tb, cc)
	baseline := time.Since(t0)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	agents := make([]*stormAgent, n)
	var awg sync.WaitGroup
	defer awg.Wait()
	defer cancel()
	want := 2 * services
	for i := range agents {
		agents[i] = &stormAgent{nd: nodes[i], addr: m.addr}
		awg.Add(1)
		go func() {
			defer awg.Done()
			agents[i].run(ctx, want)
		}()
	}
	// waitAll waits until every agent has a first message in its current
	// session and returns when each got it, after since.
	waitAll := func(since time.Time, limit time.Duration) []time.Duration {
		deadline := time.Now().Add(limit)
		for {
			out := make([]time.Duration, 0, n)
			for _, a := range agents {
				if at := a.firstAt.Load(); at != 0 {
					out = append(out, time.Unix(0, at).Sub(since))
				}
			}
			if len(out) == n {
				return out
			}
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d agents hold a snapshot after %v", len(out), n, limit)
			}
			time.Sleep(20 * time.Millisecond) // polling n atomics; no event to wait on
		}
	}
	connectStart := time.Now()
	initial := waitAll(connectStart, 10*time.Minute)
	b.Logf("%d agents connected in %.1f s", n, slices.Max(initial).Seconds())

	variants := []string{"resume", "fresh"}
	if stormRuns[n]%2 == 1 {
		variants = []string{"fresh", "resume"}
	}
	stormRuns[n]++
	for _, v := range variants {
		var attempts0 int64
		for _, a := range agents {
			a.fresh.Store(v == "fresh")
			a.firstAt.Store(0)
			attempts0 += a.attempts.Load()
		}
		failures.take()
		overflows0 := listenOverflows()
		m.kill()
		if profDir != "" {
			b.Setenv("LOCKBOX_TEST_CPUPROFILE", filepath.Join(profDir, fmt.Sprintf("storm-%d-%s.pprof", n, v)))
		}
		start := time.Now()
		m = startChild(tb, cc)
		ready := time.Since(start)
		pid := m.cmd.Process.Pid
		var agentsProf *os.File
		if profDir != "" {
			m.cmd.Process.Signal(syscall.SIGUSR2)
			// The simulated agents' side of the storm (their client
			// handshakes share the machine's cores with the manager).
			var err error
			if agentsProf, err = os.Create(filepath.Join(profDir, fmt.Sprintf("storm-%d-%s-agents.pprof", n, v))); err != nil {
				b.Fatal(err)
			}
			if err := pprof.StartCPUProfile(agentsProf); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		lat := waitAll(start, 10*time.Minute)
		b.StopTimer()
		if profDir != "" {
			pprof.StopCPUProfile()
			agentsProf.Close()
			m.cmd.Process.Signal(syscall.SIGUSR2)
			<-m.profiled
		}
		// How long after the manager was ready each agent's successful
		// attempt started: time spent asleep in backoff.
		readyAt := start.Add(ready)
		dialLag := make([]time.Duration, 0, n)
		for _, a := range agents {
			dialLag = append(dialLag, max(0, time.Unix(0, a.dialAt.Load()).Sub(readyAt)))
		}
		overflows := listenOverflows() - overflows0
		var attempts int64
		for _, a := range agents {
			attempts += a.attempts.Load()
			if s, ok := a.bad.Load().(string); ok {
				b.Fatalf("%s: an agent's snapshot was not complete: %s", v, s)
			}
		}
		peak := vmHWM(b, pid)
		live, _ := m.liveMemory()
		all := slices.Max(lat)
		b.Logf("%s: manager ready %.2f s after start; every agent holds a snapshot %.2f s after start (first %.2f s, p50 %.2f s, p99 %.2f s); successful dial after ready p50 %.2f s, p99 %.2f s, max %.2f s; %d listen-queue overflows; %d attempts for %d agents; manager peak RSS %.1f MiB, live %.1f MiB after",
			v, ready.Seconds(), all.Seconds(), slices.Min(lat).Seconds(), pctMS(lat, 0.5)/1000, pctMS(lat, 0.99)/1000,
			pctMS(dialLag, 0.5)/1000, pctMS(dialLag, 0.99)/1000, slices.Max(dialLag).Seconds(), overflows,
			attempts-attempts0, n, float64(peak)/(1<<20), float64(live)/(1<<20))
		if f := failures.take(); f != "" {
			b.Logf("%s: failed attempts: %s", v, f)
		}
		b.ReportMetric(pctMS(dialLag, 0.5)/1000, v+"-dial-after-ready-p50-s")
		b.ReportMetric(all.Seconds(), v+"-all-s")
		b.ReportMetric(pctMS(lat, 0.5)/1000, v+"-p50-s")
		b.ReportMetric((all - ready).Seconds(), v+"-all-after-ready-s")
		b.ReportMetric(float64(attempts-attempts0)/float64(n), v+"-attempts/agent")
		b.ReportMetric(float64(peak)/(1<<20), v+"-manager-peak-rss-MiB")
	}
	b.ReportMetric(baseline.Seconds(), "baseline-restart-s")
	benchinfo.Print(b)
}
