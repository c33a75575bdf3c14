//go:build linux

package manager

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/metrics"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/internal/testutil/benchinfo"
	"github.com/lockbox-project/lockbox/internal/testutil/procmem"
	"github.com/lockbox-project/lockbox/pki"
)

// BenchmarkGRPCStreams runs a real manager in a child process and N
// simulated agents in this one, each with its own node certificate, TLS
// connection and Session stream, dialled with the agents' transport
// options (api/dispatcher.Transport). It compares two ways of dialling in
// the same run, in alternating phases (A B B A ...): "adaptive", gRPC's
// default flow control with BDP estimation, and "fixed", the fixed window
// agents use. Each phase connects N streams, measures the manager's memory
// per stream and then the fan-out of service updates to every stream
// (from the admin call to each agent's Recv) and the CPU the manager and
// the agents spend on it (after one untimed update), and disconnects them
// all. Baseline: one stream alone, same run. With -count 2 the second run
// starts with the other variant.
//
// Run it with -benchtime 1x: each phase makes LOCKBOX_BENCH_UPDATES
// updates (default 20); b.N counts pairs of rounds.
func BenchmarkGRPCStreams(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) {
			if n == 10000 && os.Getenv("LOCKBOX_BENCH_10K") == "" {
				b.Skip("set LOCKBOX_BENCH_10K=1: 10,000 TLS agents take minutes on 2 cores")
			}
			benchGRPC(b, n)
		})
	}
}

func vmRSS(b *testing.B, pid int) int64 { return procmem.Bytes(b, pid, "VmRSS") }

// rssParts splits a process's RSS: anonymous memory (heap, stacks) and
// file-backed pages (the binary's text, and the manager's etcd database,
// which bbolt maps and reads through the page cache).
func rssParts(b *testing.B, pid int) (anon, file int64) {
	return procmem.Bytes(b, pid, "RssAnon"), procmem.Bytes(b, pid, "RssFile")
}

// procCPU is the user plus system CPU time process pid has used.
func procCPU(b *testing.B, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name, which is in parentheses and may
	// hold spaces: utime and stime are the 12th and 13th.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	// USER_HZ is 100 on Linux.
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// benchAgent is a simulated agent's open stream.
type benchAgent struct {
	msgs   chan *dapi.SessionMessage
	conn   *grpc.ClientConn
	cancel context.CancelFunc
}

func (a *benchAgent) close() {
	a.cancel()
	a.conn.Close()
}

// connectAgent opens nd's session dialled with tr and waits for its
// COMPLETE message.
func connectAgent(nd node, addr string, tr dapi.Transport) (*benchAgent, error) {
	cfg, err := pki.ClientTLSFromPEM(nd.root, nd.cert)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(addr, append(tr.DialOptions(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))...)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &benchAgent{msgs: make(chan *dapi.SessionMessage, 64), conn: conn, cancel: cancel}
	ss, err := dapi.NewDispatcherClient(conn).Session(ctx, &dapi.SessionRequest{Description: &types.NodeDescription{Hostname: "h"}, Features: dapi.AgentFeatures()})
	if err == nil {
		_, err = ss.Recv()
	}
	if err != nil {
		a.close()
		return nil, err
	}
	go func() {
		defer close(a.msgs)
		for {
			m, err := ss.Recv()
			if err != nil {
				return
			}
			a.msgs <- m
		}
	}()
	return a, nil
}

// benchRuns counts the runs of benchGRPC by number of streams (-count).
var benchRuns = map[int]int{}

// variant is one way of dialling the manager.
type variant struct {
	name string
	tr   dapi.Transport
}

var dialVariants = []variant{
	{"adaptive", dapi.Transport{AdaptiveWindow: true}},
	{"fixed", dapi.Transport{}},
}

// phaseResult is what one phase measured.
type phaseResult struct {
	lat              []time.Duration
	updates, streams int
	mgrCPU, agentCPU time.Duration
	live, rss        int64 // growth while the streams connected
	// rssSettled is the RSS growth with the streams still connected after
	// the phase's updates: what a manager holds per agent once the
	// handshakes' garbage has been collected (and partly returned).
	rssSettled int64
	// anonSettled and fileSettled split rssSettled: anonymous memory
	// (heap, stacks) and file-backed pages (mostly etcd's database).
	anonSettled, fileSettled int64
	mallocs                  uint64
	worst                    []time.Duration // each update's slowest stream
	// gcs marks each update during which the manager ("m") or the
	// agents' process ("a") ran a garbage collection.
	gcs              []string
	mgrGCs, agentGCs int64
}

func benchGRPC(b *testing.B, n int) {
	ctx := context.Background()
	tb := testing.TB(b)
	// LOCKBOX_BENCH_CPUPROFILE=dir: the manager writes a CPU profile of
	// the timed fan-outs of the last phase to dir/fanout-<streams>.pprof.
	profDir := os.Getenv("LOCKBOX_BENCH_CPUPROFILE")
	if profDir != "" {
		b.Setenv("LOCKBOX_TEST_CPUPROFILE", filepath.Join(profDir, fmt.Sprintf("fanout-%d.pprof", n)))
	}
	updates := 20
	// LOCKBOX_BENCH_GCTAGS=1: count each process's garbage collections
	// during each update (one scrape of the manager's metrics before and
	// after it, outside the timed span, but in its CPU and allocations).
	gcTags := os.Getenv("LOCKBOX_BENCH_GCTAGS") != ""
	if v, err := strconv.Atoi(os.Getenv("LOCKBOX_BENCH_UPDATES")); err == nil && v > 0 {
		updates = v
	}
	cc := newChildConfig(tb, "127.0.0.1")
	cc.MetricsAddr = fmt.Sprintf("127.0.0.1:%d", freePort(tb, "127.0.0.1"))
	// The simulated agents do not heartbeat: a long period keeps the
	// manager from marking thousands of nodes down (etcd writes) while
	// it is measured.
	cc.HeartbeatPeriod = time.Hour
	cc.NoUnauthLimit = true
	m := startChild(tb, cc)
	adm := m.admin()
	tok := token(tb, adm, types.NodeRole_NODE_ROLE_WORKER, false)
	sec := createSecret(tb, adm, "s", "data")
	svc := createService(tb, adm, "svc", nil, sec)

	nodes := make([]node, n+1)
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				nodes[i] = joinNode(tb, m.addr, tok, fmt.Sprintf("n%d", i))
			}
		}()
	}
	b.Logf("%d nodes joining", n+1)
	for i := 0; i <= n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()

	// connect retries a failed handshake, as an agent would: under a
	// burst of thousands of handshakes on 2 cores a few take longer than
	// gRPC's 20s connect deadline.
	connect := func(nd node, tr dapi.Transport) (*benchAgent, error) {
		var err error
		for attempt := 0; attempt < 3; attempt++ {
			var a *benchAgent
			if a, err = connectAgent(nd, m.addr, tr); err == nil {
				return a, nil
			}
		}
		return nil, err
	}
	// LOCKBOX_BENCH_SECRET_BYTES=n: each update rotates an n-byte secret
	// instead of changing a label, so every message carries secret data.
	secretBytes, _ := strconv.Atoi(os.Getenv("LOCKBOX_BENCH_SECRET_BYTES"))
	rotations := 0
	update := func(agents []*benchAgent) []time.Duration {
		r, err := adm.GetService(ctx, &adminapi.GetServiceRequest{NameOrId: svc.Id})
		if err != nil {
			b.Fatal(err)
		}
		sp := r.Service.Spec
		sp.Labels = map[string]string{"t": time.Now().String()}
		if secretBytes > 0 {
			// Rotate the service's secret: every node receives the new
			// secret's data, the service and the old secret's removal.
			rotations++
			name := fmt.Sprintf("rot-%d", rotations)
			cr, err := adm.CreateSecret(ctx, &adminapi.CreateSecretRequest{Spec: &types.SecretSpec{Name: name}, Data: bytes.Repeat([]byte{'a' + byte(rotations%26)}, secretBytes)})
			if err != nil {
				b.Fatal(err)
			}
			sp.Secrets = []*types.SecretReference{{SecretId: cr.Secret.Id, SecretName: name, Target: &types.FileTarget{Name: "rotated"}}}
		}
		t0 := time.Now()
		u, err := adm.UpdateService(ctx, &adminapi.UpdateServiceRequest{NameOrId: svc.Id, Version: r.Service.Meta.Version, Spec: sp})
		if err != nil {
			b.Fatal(err)
		}
		want := u.Service.Meta.Version
		out := make([]time.Duration, len(agents))
		var wg sync.WaitGroup
		for i, a := range agents {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for msg := range a.msgs {
					if msg.Revision >= want && len(msg.Changes) > 0 {
						out[i] = time.Since(t0)
						return
					}
				}
				b.Errorf("agent %d: stream ended before revision %d", i, want)
			}()
		}
		wg.Wait()
		return out
	}

	// phase connects n agents dialled with tr, measures, and disconnects
	// them.
	phase := func(v variant, profile bool) phaseResult {
		var r phaseResult
		rssBefore := vmRSS(b, m.cmd.Process.Pid)
		anonBefore, fileBefore := rssParts(b, m.cmd.Process.Pid)
		liveBefore, _ := m.liveMemory()
		agents := make([]*benchAgent, n)
		errs := make([]error, n)
		idx := make(chan int)
		var cwg sync.WaitGroup
		for w := 0; w < 16; w++ {
			cwg.Add(1)
			go func() {
				defer cwg.Done()
				for i := range idx {
					agents[i], errs[i] = connect(nodes[i], v.tr)
				}
			}()
		}
		for i := 0; i < n; i++ {
			idx <- i
		}
		close(idx)
		cwg.Wait()
		for i, err := range errs {
			if err != nil {
				b.Fatalf("%s: agent %d of %d: %v", v.name, i, n, err)
			}
		}
		r.rss = vmRSS(b, m.cmd.Process.Pid) - rssBefore
		liveAfter, _ := m.liveMemory()
		r.live = liveAfter - liveBefore

		// One untimed update first: the first write on each new
		// connection sets up buffers that later writes reuse, a cost
		// paid once per connection, not per fan-out (measured: the first
		// update's slowest stream took up to twice the others').
		update(agents)
		_, _, mallocsBefore := m.memStats()
		mgrCPU0, agentCPU0 := procCPU(b, m.cmd.Process.Pid), procCPU(b, os.Getpid())
		if profile {
			m.cmd.Process.Signal(syscall.SIGUSR2)
		}
		for i := 0; i < updates; i++ {
			var mgc0, agc0, mgc, agc int64
			if gcTags {
				mgc0, agc0 = managerGCs(tb, cc.MetricsAddr), agentGCs()
			}
			l := update(agents)
			if gcTags {
				mgc, agc = managerGCs(tb, cc.MetricsAddr)-mgc0, agentGCs()-agc0
			}
			r.lat = append(r.lat, l...)
			r.worst = append(r.worst, slices.Max(l))
			r.gcs = append(r.gcs, strings.Repeat("m", int(mgc))+strings.Repeat("a", int(agc)))
			r.mgrGCs += mgc
			r.agentGCs += agc
		}
		r.mgrCPU, r.agentCPU = procCPU(b, m.cmd.Process.Pid)-mgrCPU0, procCPU(b, os.Getpid())-agentCPU0
		if profile {
			m.cmd.Process.Signal(syscall.SIGUSR2)
			<-m.profiled
		}
		_, _, mallocsAfter := m.memStats()
		r.mallocs = mallocsAfter - mallocsBefore
		r.rssSettled = vmRSS(b, m.cmd.Process.Pid) - rssBefore
		anon, file := rssParts(b, m.cmd.Process.Pid)
		r.anonSettled, r.fileSettled = anon-anonBefore, file-fileBefore
		r.updates, r.streams = updates, n
		for _, a := range agents {
			a.close()
		}
		// The next phase starts from a manager that holds no stream.
		waitMetric(tb, cc.MetricsAddr, 0, "lockbox_manager_sessions")
		return r
	}

	// Baseline: one stream alone, dialled as agents dial.
	first, err := connect(nodes[n], dapi.Transport{})
	if err != nil {
		b.Fatal(err)
	}
	one := []*benchAgent{first}
	var base []time.Duration
	for i := 0; i < 10; i++ {
		base = append(base, update(one)...)
	}
	first.close()
	waitMetric(tb, cc.MetricsAddr, 0, "lockbox_manager_sessions")

	results := map[string][]phaseResult{}
	// Runs of the same size alternate which variant goes first (A B B A,
	// then B A A B): only the first phase's RSS growth means anything,
	// and each variant gets it in turn.
	firstFixed := benchRuns[n]%2 == 1
	benchRuns[n]++
	var firstPhase string
	b.ResetTimer()
	for round := 0; round < 2*b.N; round++ {
		order := dialVariants
		if (round%2 == 1) != firstFixed {
			order = []variant{dialVariants[1], dialVariants[0]}
		}
		if firstPhase == "" {
			firstPhase = order[0].name
		}
		for j, v := range order {
			last := round == 2*b.N-1 && j == len(order)-1
			r := phase(v, profDir != "" && last)
			results[v.name] = append(results[v.name], r)
			worst := make([]string, len(r.worst))
			for i, w := range r.worst {
				worst[i] = fmt.Sprint(w.Milliseconds()) + r.gcs[i]
			}
			// RSS growth is printed for every phase, though only the
			// first's means much: later phases reuse what the manager
			// already holds.
			gcs := "GCs not counted (LOCKBOX_BENCH_GCTAGS)"
			if gcTags {
				gcs = fmt.Sprintf("GCs in the updates: manager %d, agents %d", r.mgrGCs, r.agentGCs)
			}
			b.Logf("round %d %s: p50 %.1f ms p99 %.1f ms, manager CPU %.1f ms/update, live %d B/stream, RSS growth %d B/stream (%d after the updates: anonymous %d, file-backed %d); %s; each update's slowest stream (ms; m, a: a GC in the manager, the agents' process): %s",
				round, v.name, pctMS(r.lat, 0.5), pctMS(r.lat, 0.99), float64(r.mgrCPU.Microseconds())/1000/float64(r.updates), r.live/int64(n), r.rss/int64(n), r.rssSettled/int64(n), r.anonSettled/int64(n), r.fileSettled/int64(n), gcs, strings.Join(worst, " "))
		}
	}
	b.StopTimer()

	b.ReportMetric(pctMS(base, 0.5), "one-stream-p50-ms")
	agg := map[string]phaseResult{}
	for name, rs := range results {
		var a phaseResult
		for _, r := range rs {
			a.lat = append(a.lat, r.lat...)
			a.updates += r.updates
			a.streams += r.streams
			a.mgrCPU += r.mgrCPU
			a.agentCPU += r.agentCPU
			a.live += r.live
			a.mallocs += r.mallocs
			a.worst = append(a.worst, r.worst...)
		}
		agg[name] = a
		b.ReportMetric(pctMS(a.lat, 0.5), name+"-p50-ms")
		b.ReportMetric(pctMS(a.lat, 0.99), name+"-p99-ms")
		// The typical time until the last stream has the change. The
		// p99 over all streams is set by the few slowest updates (an
		// etcd commit or a GC that delays every stream of one update).
		b.ReportMetric(pctMS(a.worst, 0.5), name+"-last-stream-p50-ms")
		b.ReportMetric(float64(a.mgrCPU.Microseconds())/1000/float64(a.updates), name+"-manager-cpu-ms/op")
		b.ReportMetric(float64(a.agentCPU.Microseconds())/1000/float64(a.updates), name+"-agents-cpu-ms/op")
		// Live heap and stacks after a GC: phases after the first reuse
		// memory the process already has, so RSS growth is only
		// meaningful for the first phase (reported below).
		b.ReportMetric(float64(a.live)/float64(a.streams), name+"-manager-live-bytes/stream")
		b.ReportMetric(float64(a.mallocs)/float64(a.updates*n), name+"-manager-allocs/send")
	}
	b.ReportMetric(float64(results[firstPhase][0].rss)/float64(n), "first-phase-"+firstPhase+"-manager-rss-bytes/stream")
	b.ReportMetric(float64(results[firstPhase][0].rssSettled)/float64(n), "first-phase-"+firstPhase+"-manager-rss-settled-bytes/stream")
	b.ReportMetric(float64(results[firstPhase][0].anonSettled)/float64(n), "first-phase-"+firstPhase+"-manager-rss-settled-anon-bytes/stream")
	b.ReportMetric(float64(results[firstPhase][0].fileSettled)/float64(n), "first-phase-"+firstPhase+"-manager-rss-settled-file-bytes/stream")
	ad, fx := agg["adaptive"], agg["fixed"]
	b.ReportMetric(pctMS(fx.lat, 0.5)/pctMS(ad.lat, 0.5), "fixed/adaptive-p50")
	b.ReportMetric(pctMS(fx.lat, 0.99)/pctMS(ad.lat, 0.99), "fixed/adaptive-p99")
	b.ReportMetric(float64(fx.mgrCPU)/float64(ad.mgrCPU), "fixed/adaptive-manager-cpu")
	benchinfo.Print(b)
}

// pctMS is the q-quantile of d in milliseconds; it sorts d.
func pctMS(d []time.Duration, q float64) float64 {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return float64(d[int(float64(len(d)-1)*q)].Microseconds()) / 1000
}

// managerGCs is the number of garbage collections the manager at addr
// (its metrics listener) has completed: one scrape, outside the timed
// span of an update.
func managerGCs(tb testing.TB, addr string) int64 {
	mf := scrape(tb, addr)["go_gc_duration_seconds"]
	if mf == nil || len(mf.GetMetric()) == 0 {
		tb.Fatal("the manager's metrics have no go_gc_duration_seconds")
	}
	return int64(mf.GetMetric()[0].GetSummary().GetSampleCount())
}

// agentGCs is the number of garbage collections of this process, the
// simulated agents'.
func agentGCs() int64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64())
}
