//go:build linux

package manager

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/internal/testutil/benchinfo"
	"github.com/lockbox-project/lockbox/manager/etcd"
	"github.com/lockbox-project/lockbox/manager/store"
)

// BenchmarkLiveUpdateAgents measures a live update (issue 14) across N
// simulated agents: from the admin UpdateService call that rotates a
// live-update service's secret (same target, new secret: what `lockbox
// service update --secret-rm old --secret-add source=new,target=SAME`
// sends) on one real manager (a child process: embedded etcd, real TLS)
// until the last simulated agent has changed its container's file, and
// until the manager has recorded every agent's UPDATED report (what
// `lockbox service ps` shows).
//
// A simulated agent is a real mTLS dispatcher session (its own node
// certificate, connection and Session stream, dialled with the agents'
// transport options, as in BenchmarkGRPCStreams; liveagent_sim_test.go)
// holding a simulated running container of each of two services placed on
// every node, one with live update and one without. What
// is the agent's real code: every message goes through grants.Cache.Apply
// (locked memory, reconcile), and the container's new files are decided as
// agent.liveUpdate decides them (Cache.Restrict, Restricted.LiveUpdate,
// mounter.NewPlan, mounter.DiffFiles, Restricted.WithSecret for the
// bytes). What is simulated: the swap is a write of the new bytes to a
// file beside the old one in a per-agent directory on a tmpfs, renamed
// over it (the real mounter mounts the new file beneath the old one inside
// the container's mount namespace: BenchmarkUpdate in ./linux, 0.25-0.7 ms
// on this machine); there is no container record to rewrite, no pidfd
// check and no signal. Every agent heartbeats at the manager's period (5 s,
// LOCKBOX_BENCH_HEARTBEAT) from a random phase, and its UPDATED report,
// with the secret IDs, rides its next heartbeat, as lockbox agent sends it
// (agent/session's report queue); LOCKBOX_BENCH_LIVE_REPORTS=now sends it
// at once on its own heartbeat instead: the least a report can take, and
// the most load the reports put on the manager while the fan-out runs.
// A heartbeat whose reports the manager refuses (etcd's "too many
// requests" at 10,000 agents) keeps them for the next beat, as the agent's
// report queue does (report-beats-refused counts them).
//
// Each run alternates live rotations with the baseline, same run: the
// same rotation of a second service, placed the same way but without live
// update, which the agents receive and apply (grant delivery alone). Each
// agent holds a running container of each service; the pass over both
// runs on every message, and the one without live update must keep the
// files it started with (checked at the end). Both services
// hold one 64-byte secret. Reported, over the rotations (nearest rank:
// with 20 rotations p99 is the slowest): the time until the last agent's
// file changed (live-file-last-*), the last UPDATED report recorded
// (live-reported-last-*), the last agent applied the message (the live
// rotation's own delivery, live-applied-last-*, and the baseline's,
// plain-applied-last-*), the same over every agent and rotation
// (live-file-all-*), the manager's RSS and peak RSS, its CPU per live and
// per baseline rotation and over one idle heartbeat period (every agent's
// empty beat), and the load average; the simulated agents share the
// manager's cores. At the end, `service ps` (ListServiceContainers) must
// list every container as updated to the last secret, and every
// container's file must hold its bytes.
//
// Run it with -benchtime 1x: LOCKBOX_BENCH_ROTATIONS (default 20, at most
// 62: the manager takes 64 reports per node per heartbeat period) live
// rotations, as many baseline ones. 10,000 agents need LOCKBOX_BENCH_10K=1.
// LOCKBOX_BENCH_CPUPROFILE=dir writes the manager's CPU profile of the
// timed rotations to dir/liveagents-<agents>.pprof.
// LOCKBOX_BENCH_LIVE_PROBE=1 logs, after each pair of rotations, what
// could grow from one to the next (liveProbe). LOCKBOX_BENCH_TMPFS
// (default /dev/shm) is where the containers' files are: it must be a
// tmpfs.
func BenchmarkLiveUpdateAgents(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) {
			if n == 10000 && os.Getenv("LOCKBOX_BENCH_10K") == "" {
				b.Skip("set LOCKBOX_BENCH_10K=1: 10,000 TLS agents take minutes on 2 cores")
			}
			benchLiveAgents(b, n)
		})
	}
}

// liveRotator rotates one service's secret: a new secret, then the
// service updated to reference it at the same target.
type liveRotator struct {
	adm    adminapi.AdminClient
	name   string
	live   bool
	svc    *types.Service
	n      int
	data   string
	first  string // the data of the first secret
	secret string // the current secret's ID
}

// rotate returns when the UpdateService call was made and the revision
// it wrote.
func (r *liveRotator) rotate(ctx context.Context) (time.Time, uint64, error) {
	r.n++
	r.data = fmt.Sprintf("%s-%d-", r.name, r.n)
	r.data += strings.Repeat("x", liveBenchBytes-len(r.data))
	if r.n == 1 {
		r.first = r.data
	}
	cr, err := r.adm.CreateSecret(ctx, &adminapi.CreateSecretRequest{Spec: &types.SecretSpec{Name: fmt.Sprintf("%s-%d", r.name, r.n)}, Data: []byte(r.data)})
	if err != nil {
		return time.Time{}, 0, err
	}
	r.secret = cr.GetSecret().GetId()
	spec := &types.ServiceSpec{Name: r.name, LiveUpdate: r.live, Secrets: []*types.SecretReference{{
		SecretId: r.secret, SecretName: cr.GetSecret().GetSpec().GetName(), Target: &types.FileTarget{Name: r.name}}}}
	t0 := time.Now()
	if r.svc == nil {
		resp, err := r.adm.CreateService(ctx, &adminapi.CreateServiceRequest{Spec: spec})
		if err != nil {
			return time.Time{}, 0, err
		}
		r.svc = resp.GetService()
		return t0, r.svc.GetMeta().GetVersion(), nil
	}
	resp, err := r.adm.UpdateService(ctx, &adminapi.UpdateServiceRequest{NameOrId: r.svc.GetId(), Version: r.svc.GetMeta().GetVersion(), Spec: spec})
	if err != nil {
		return time.Time{}, 0, err
	}
	r.svc = resp.GetService()
	return t0, r.svc.GetMeta().GetVersion(), nil
}

// liveTmpfs is a fresh directory on a tmpfs for the containers' files.
func liveTmpfs(b *testing.B) string {
	base := os.Getenv("LOCKBOX_BENCH_TMPFS")
	if base == "" {
		base = "/dev/shm"
	}
	var st unix.Statfs_t
	if err := unix.Statfs(base, &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		b.Fatalf("LOCKBOX_BENCH_TMPFS=%s is not a tmpfs (%v): the containers' files must not touch disk", base, err)
	}
	dir, err := os.MkdirTemp(base, "lockbox-liveagents-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// load1 is the 1-minute load average.
func load1() float64 {
	data, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return math.NaN()
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// nearestRank is the q-quantile of d (nearest rank) in milliseconds.
func nearestRank(d []time.Duration, q float64) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	i := max(0, int(math.Ceil(q*float64(len(s))))-1)
	return float64(s[i].Microseconds()) / 1000
}

func benchLiveAgents(b *testing.B, n int) {
	ctx := context.Background()
	tb := testing.TB(b)
	rotations := 20
	if v, err := strconv.Atoi(os.Getenv("LOCKBOX_BENCH_ROTATIONS")); err == nil && v > 0 {
		rotations = v
	}
	// How the agents deliver their UPDATED reports: "beat" (the default)
	// on their next periodic heartbeat, as lockbox agent does; "now" at
	// once, each on its own heartbeat (the least a report can take, and
	// the most load it puts on the manager while the fan-out runs).
	mode := os.Getenv("LOCKBOX_BENCH_LIVE_REPORTS")
	switch mode {
	case "":
		mode = "beat"
	case "beat", "now":
	default:
		b.Fatalf("LOCKBOX_BENCH_LIVE_REPORTS=%q: beat or now", mode)
	}
	// The heartbeat period the manager tells agents (its default, 5 s);
	// every agent beats at it.
	period := 5 * time.Second
	if v, err := time.ParseDuration(os.Getenv("LOCKBOX_BENCH_HEARTBEAT")); err == nil && v > 0 {
		period = v
	}
	// Each agent reports once per live rotation, plus its two mounts and
	// the untimed rotation; the manager takes dapi.MaxMountReports per
	// node per heartbeat period.
	if reports := b.N*rotations + 3; reports > dapi.MaxMountReports {
		b.Fatalf("%d rotations make %d reports per node, more than the %d a node may send per heartbeat period: run with -benchtime 1x and LOCKBOX_BENCH_ROTATIONS <= %d",
			b.N*rotations, reports, dapi.MaxMountReports, dapi.MaxMountReports-3)
	}
	shm := liveTmpfs(b)
	profDir := os.Getenv("LOCKBOX_BENCH_CPUPROFILE")
	if profDir != "" {
		b.Setenv("LOCKBOX_TEST_CPUPROFILE", filepath.Join(profDir, fmt.Sprintf("liveagents-%d.pprof", n)))
	}
	cc := newChildConfig(tb, "127.0.0.1")
	cc.HeartbeatPeriod = period
	cc.NoUnauthLimit = true
	m := startChild(tb, cc)
	pid := m.cmd.Process.Pid
	adm := m.admin()
	tok := token(tb, adm, types.NodeRole_NODE_ROLE_WORKER, false)
	live := &liveRotator{adm: adm, name: liveBenchService, live: true}
	plain := &liveRotator{adm: adm, name: plainBenchService}
	for _, r := range []*liveRotator{live, plain} {
		if _, _, err := r.rotate(ctx); err != nil {
			b.Fatal(err)
		}
	}

	nodes := joinNodes(tb, m.addr, tok, n)

	rssBefore := vmRSS(b, pid)
	agents := make([]*liveAgent, n)
	errs := make([]error, n)
	idx := make(chan int)
	connectStart := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				// Retried as an agent retries: under a burst of
				// handshakes on 2 cores a few miss gRPC's deadline.
				for try := 0; try < 3; try++ {
					dir := filepath.Join(shm, strconv.Itoa(i))
					if agents[i], errs[i] = connectLiveAgent(nodes[i], fmt.Sprintf("n%d", i), m.addr, dir, mode == "now", period); errs[i] == nil {
						break
					}
				}
			}
		}()
	}
	for i := range n {
		idx <- i
	}
	close(idx)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			b.Fatalf("agent %d of %d: %v", i, n, err)
		}
	}
	defer func() {
		for _, a := range agents {
			a.close()
		}
	}()
	rss := vmRSS(b, pid)
	b.Logf("%d agents connected, each holding a running container of each service, in %.1f s; manager RSS %.1f MiB (%.1f KiB more per agent); reports %s, heartbeat every %v",
		n, time.Since(connectStart).Seconds(), float64(rss)/(1<<20), float64(rss-rssBefore)/1024/float64(n), mode, period)

	// rotate makes one rotation of r and waits for every agent's event
	// for it.
	type outcome struct {
		applied, changed, reported []time.Duration
	}
	rotate := func(r *liveRotator) outcome {
		t0, want, err := r.rotate(ctx)
		if err != nil {
			b.Fatal(err)
		}
		o := outcome{applied: make([]time.Duration, n)}
		if r.live {
			o.changed, o.reported = make([]time.Duration, n), make([]time.Duration, n)
		}
		for i, a := range agents {
			timeout := time.After(2 * time.Minute)
			for {
				var ev liveEvent
				var ok bool
				select {
				case ev, ok = <-a.events:
				case <-timeout:
					b.Fatalf("%s rotation %d: agent %d has no message of revision %d after 2 minutes", r.name, r.n, i, want)
				}
				if !ok {
					b.Fatalf("%s rotation %d: agent %d: the stream ended", r.name, r.n, i)
				}
				if ev.err != nil {
					b.Fatalf("%s rotation %d: agent %d: %v", r.name, r.n, i, ev.err)
				}
				if ev.rev < want || ev.changes == 0 {
					continue
				}
				o.applied[i] = ev.applied.Sub(t0)
				switch {
				case r.live && ev.changed.IsZero():
					b.Fatalf("live rotation %d: agent %d applied revision %d but its container's file did not change", r.n, i, ev.rev)
				case r.live:
					o.changed[i] = ev.changed.Sub(t0)
				case !ev.changed.IsZero():
					b.Fatalf("rotation %d of %s: agent %d changed the files of its %s container, whose grants did not change", r.n, r.name, i, liveBenchService)
				}
				break
			}
		}
		if !r.live {
			return o
		}
		// Every UPDATED report recorded: the rotation's load on the
		// manager is over, and `service ps` shows it.
		for i, a := range agents {
			timeout := time.After(2*time.Minute + period)
			for {
				var ack reportAck
				select {
				case ack = <-a.acks:
				case <-timeout:
					b.Fatalf("live rotation %d: agent %d's report of %s not recorded after 2 minutes and a heartbeat period", r.n, i, r.secret)
				}
				if ack.err != nil {
					b.Fatalf("live rotation %d: agent %d's report: %v", r.n, i, ack.err)
				}
				if ack.secret == r.secret {
					o.reported[i] = ack.at.Sub(t0)
					break
				}
			}
		}
		return o
	}

	// One untimed rotation of each first: the first write on each new
	// connection sets up buffers that later writes reuse (see benchGRPC).
	rotate(live)
	rotate(plain)
	// The manager's CPU over one heartbeat period with no rotation: every
	// agent's empty beat. A live rotation in beat mode spans about one
	// period (it waits for every agent's report), so it includes these.
	idle0 := procCPU(b, pid)
	time.Sleep(period) // a measurement window, not a wait for an event
	idleCPU := procCPU(b, pid) - idle0

	var (
		liveFile, liveReported, liveApplied, plainApplied []time.Duration // the last agent's, per rotation
		allFile                                           []time.Duration // every agent's, every rotation
		liveCPU, plainCPU                                 time.Duration   // the manager's
	)
	load0 := load1()
	if profDir != "" {
		m.cmd.Process.Signal(syscall.SIGUSR2)
	}
	var probe *liveProbe
	if os.Getenv("LOCKBOX_BENCH_LIVE_PROBE") != "" {
		probe = newLiveProbe(b, m)
		defer probe.close()
		probe.log(b, -1, m, agents)
	}
	b.ResetTimer()
	for i := 0; i < b.N*rotations; i++ {
		// Alternating, and each pair in turn starting with the other, so
		// that neither always follows the other.
		order := []*liveRotator{live, plain}
		if i%2 == 1 {
			order = []*liveRotator{plain, live}
		}
		for _, r := range order {
			c0 := procCPU(b, pid)
			o := rotate(r)
			c := procCPU(b, pid) - c0
			if !r.live {
				plainCPU += c
				plainApplied = append(plainApplied, slices.Max(o.applied))
				b.Logf("baseline rotation %d: last agent applied %.1f ms; manager CPU %.0f ms", i, ms(slices.Max(o.applied)), ms(c))
				continue
			}
			liveCPU += c
			liveApplied = append(liveApplied, slices.Max(o.applied))
			liveFile = append(liveFile, slices.Max(o.changed))
			liveReported = append(liveReported, slices.Max(o.reported))
			allFile = append(allFile, o.changed...)
			b.Logf("live rotation %d: last agent applied %.1f ms, last file changed %.1f ms (p50 of agents %.1f ms), last report recorded %.1f ms; manager CPU %.0f ms",
				i, ms(slices.Max(o.applied)), ms(slices.Max(o.changed)), nearestRank(o.changed, 0.5), ms(slices.Max(o.reported)), ms(c))
		}
		if probe != nil {
			probe.log(b, i, m, agents)
		}
	}
	b.StopTimer()
	if profDir != "" {
		m.cmd.Process.Signal(syscall.SIGUSR2)
		<-m.profiled
	}
	load := load1()
	peak := vmHWM(b, pid)
	var refused int64
	for _, a := range agents {
		refused += a.refused.Load()
	}
	if refused > 0 {
		b.Logf("the manager refused %d heartbeats with reports (the agents sent them again on their next beat)", refused)
	}

	// What `lockbox service ps` shows: every container updated to the
	// last secret. And every container's file holds its bytes.
	var rows []*adminapi.ServiceContainer
	for after := ""; ; {
		resp, err := adm.ListServiceContainers(ctx, &adminapi.ListServiceContainersRequest{NameOrId: liveBenchService, After: after})
		if err != nil {
			b.Fatal(err)
		}
		rows = append(rows, resp.GetContainers()...)
		if after = resp.GetNextPage(); after == "" {
			break
		}
	}
	if len(rows) != n {
		b.Fatalf("service ps lists %d containers, want %d", len(rows), n)
	}
	for _, row := range rows {
		if s := row.GetSecrets(); row.GetState() != "updated" || len(s) != 1 || s[0].GetSecretId() != live.secret {
			b.Fatalf("service ps: container %s is %q with %v, want updated with %s", row.GetContainerId(), row.GetState(), s, live.secret)
		}
	}
	// The containers of the service without live update kept the bytes
	// they started with.
	for _, a := range agents {
		for i, want := range []string{live.data, plain.first} {
			c := a.containers[i]
			got, err := os.ReadFile(c.path(c.files[0]))
			if err != nil || string(got) != want {
				b.Fatalf("%s holds %q (%v), want %q", c.path(c.files[0]), got, err, want)
			}
		}
	}

	b.ReportMetric(nearestRank(liveFile, 0.5), "live-file-last-p50-ms")
	b.ReportMetric(nearestRank(liveFile, 0.99), "live-file-last-p99-ms")
	b.ReportMetric(nearestRank(liveReported, 0.5), "live-reported-last-p50-ms")
	b.ReportMetric(nearestRank(liveReported, 0.99), "live-reported-last-p99-ms")
	b.ReportMetric(nearestRank(liveApplied, 0.5), "live-applied-last-p50-ms")
	b.ReportMetric(nearestRank(allFile, 0.5), "live-file-all-p50-ms")
	b.ReportMetric(nearestRank(allFile, 0.99), "live-file-all-p99-ms")
	b.ReportMetric(nearestRank(plainApplied, 0.5), "plain-applied-last-p50-ms")
	b.ReportMetric(nearestRank(plainApplied, 0.99), "plain-applied-last-p99-ms")
	b.ReportMetric(nearestRank(liveFile, 0.5)/nearestRank(plainApplied, 0.5), "live-file/plain-applied-p50")
	b.ReportMetric(ms(liveCPU)/float64(b.N*rotations), "manager-cpu-ms/live-rotation")
	b.ReportMetric(ms(plainCPU)/float64(b.N*rotations), "manager-cpu-ms/plain-rotation")
	b.ReportMetric(ms(idleCPU), "manager-cpu-ms/idle-period")
	b.ReportMetric(float64(rss)/(1<<20), "manager-rss-MiB")
	b.ReportMetric(float64(peak)/(1<<20), "manager-peak-rss-MiB")
	b.ReportMetric(float64(refused), "report-beats-refused")
	b.ReportMetric(load0, "loadavg-1m-start")
	b.ReportMetric(load, "loadavg-1m-end")
	benchinfo.Print(b)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// liveProbe: what grows between the rotations of BenchmarkLiveUpdateAgents
// (LOCKBOX_BENCH_LIVE_PROBE=1). After each pair of rotations it logs the
// manager's live heap and goroutines (after a GC), its CPU and the test
// process's (the simulated agents) since the last probe, the embedded
// etcd's revision, database size and key counts by prefix, and the
// reports the simulated agents still hold.
type liveProbe struct {
	cli             *clientv3.Client
	ep              string
	mgrCPU, selfCPU time.Duration
	at              time.Time
}

func newLiveProbe(b *testing.B, m *childManager) *liveProbe {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ep := "unix://" + etcd.ClientSocket(filepath.Join(m.cc.DataDir, "etcd"))
	cli, err := etcd.Connect(ctx, []string{ep}, nil)
	if err != nil {
		b.Fatal(err)
	}
	return &liveProbe{cli: cli, ep: ep, mgrCPU: procCPU(b, m.cmd.Process.Pid), selfCPU: procCPU(b, os.Getpid()), at: time.Now()}
}

func (p *liveProbe) close() { p.cli.Close() }

func (p *liveProbe) count(ctx context.Context, b *testing.B, prefix string) int64 {
	resp, err := p.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		b.Fatal(err)
	}
	return resp.Count
}

func (p *liveProbe) log(b *testing.B, i int, m *childManager, agents []*liveAgent) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mgr, self := procCPU(b, m.cmd.Process.Pid), procCPU(b, os.Getpid())
	wall := time.Since(p.at)
	heap, goroutines := m.liveMemory()
	st, err := p.cli.Status(ctx, p.ep)
	if err != nil {
		b.Fatal(err)
	}
	pending := 0
	for _, a := range agents {
		a.mu.Lock()
		pending += len(a.pending)
		a.mu.Unlock()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	pre := store.DefaultPrefix
	// "audit" counts both classes of the audit log: audit/ and audit-node/.
	b.Logf("probe %d: wall %.1f s; manager CPU %.1f s, heap+stacks %.0f MiB, %d goroutines; agents' process CPU %.1f s, heap %.0f MiB, %d goroutines, %d reports pending; etcd rev %d, db %.0f MiB (in use %.0f MiB), keys %d: audit %d, containers %d, nodecontainers %d",
		i, wall.Seconds(), (mgr - p.mgrCPU).Seconds(), float64(heap)/(1<<20), goroutines,
		(self - p.selfCPU).Seconds(), float64(ms.HeapInuse)/(1<<20), runtime.NumGoroutine(), pending,
		st.Header.Revision, float64(st.DbSize)/(1<<20), float64(st.DbSizeInUse)/(1<<20),
		p.count(ctx, b, pre), p.count(ctx, b, pre+"audit"), p.count(ctx, b, pre+"containers/"), p.count(ctx, b, pre+"nodecontainers/"))
	p.mgrCPU, p.selfCPU, p.at = procCPU(b, m.cmd.Process.Pid), procCPU(b, os.Getpid()), time.Now()
}
