//go:build linux

package manager

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
)

// BenchmarkGRPCStreams runs a real manager in a child process and N
// simulated agents in this one, each with its own node certificate, TLS
// connection and Session stream. It reports the manager process's memory
// per connected stream (VmRSS growth, so TLS and HTTP/2 buffers count) and
// the fan-out latency of a service update to every stream (from the admin
// call to each agent's Recv), against one stream measured in the same run.
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

func vmRSS(b *testing.B, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	b.Fatal("no VmRSS")
	return 0
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

type benchAgent struct {
	msgs chan *dapi.SessionMessage
}

func benchGRPC(b *testing.B, n int) {
	ctx := context.Background()
	tb := testing.TB(b)
	// LOCKBOX_BENCH_CPUPROFILE=dir: the manager writes a CPU profile of
	// the timed fan-outs to dir/fanout-<streams>.pprof.
	profDir := os.Getenv("LOCKBOX_BENCH_CPUPROFILE")
	if profDir != "" {
		b.Setenv("LOCKBOX_TEST_CPUPROFILE", filepath.Join(profDir, fmt.Sprintf("fanout-%d.pprof", n)))
	}
	m := startChild(tb, newChildConfig(tb, "127.0.0.1"))
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
	connect := func(nd node) (*benchAgent, error) {
		var err error
		for attempt := 0; attempt < 3; attempt++ {
			s := nd.session(tb, m.addr, 0)
			select {
			case <-s.msgs: // COMPLETE
				return &benchAgent{msgs: s.msgs}, nil
			case err = <-s.errc:
				s.cancel()
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
			}()
		}
		wg.Wait()
		return out
	}

	// Baseline: one stream alone.
	first, err := connect(nodes[n])
	if err != nil {
		b.Fatal(err)
	}
	one := []*benchAgent{first}
	var base []time.Duration
	for i := 0; i < 10; i++ {
		base = append(base, update(one)...)
	}
	rssBefore := vmRSS(b, m.cmd.Process.Pid)
	liveBefore, gBefore := m.liveMemory()
	agents := make([]*benchAgent, n)
	errs := make([]error, n)
	idx := make(chan int)
	var cwg sync.WaitGroup
	for w := 0; w < 16; w++ {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			for i := range idx {
				agents[i], errs[i] = connect(nodes[i])
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
			b.Fatalf("agent %d of %d: %v", i, n, err)
		}
	}
	rssAfter := vmRSS(b, m.cmd.Process.Pid)
	liveAfter, gAfter := m.liveMemory()

	var all []time.Duration
	_, _, mallocsBefore := m.memStats()
	mgrCPU0, agentCPU0 := procCPU(b, m.cmd.Process.Pid), procCPU(b, os.Getpid())
	if profDir != "" {
		m.cmd.Process.Signal(syscall.SIGUSR2)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		all = append(all, update(agents)...)
	}
	b.StopTimer()
	mgrCPU, agentCPU := procCPU(b, m.cmd.Process.Pid)-mgrCPU0, procCPU(b, os.Getpid())-agentCPU0
	if profDir != "" {
		m.cmd.Process.Signal(syscall.SIGUSR2)
		<-m.profiled
	}
	_, _, mallocsAfter := m.memStats()
	sortD := func(d []time.Duration) { sort.Slice(d, func(i, j int) bool { return d[i] < d[j] }) }
	sortD(all)
	sortD(base)
	p := func(d []time.Duration, q float64) float64 {
		return float64(d[int(float64(len(d)-1)*q)].Microseconds()) / 1000
	}
	b.ReportMetric(p(all, 0.5), "p50-ms")
	b.ReportMetric(p(all, 0.99), "p99-ms")
	b.ReportMetric(p(base, 0.5), "one-stream-p50-ms")
	b.ReportMetric(float64(rssAfter-rssBefore)/float64(n), "manager-rss-bytes/stream")
	b.ReportMetric(float64(liveAfter-liveBefore)/float64(n), "manager-live-bytes/stream")
	b.ReportMetric(float64(gAfter-gBefore)/float64(n), "goroutines/stream")
	// Everything the manager allocated per delivered message, the admin
	// update and the store write included.
	b.ReportMetric(float64(mallocsAfter-mallocsBefore)/float64(b.N*n), "manager-allocs/send")
	// Where the fan-out's CPU goes on this machine: the manager process,
	// and the simulated agents (this process), which share its cores.
	b.ReportMetric(float64(mgrCPU.Microseconds())/1000/float64(b.N), "manager-cpu-ms/op")
	b.ReportMetric(float64(agentCPU.Microseconds())/1000/float64(b.N), "agents-cpu-ms/op")
}
