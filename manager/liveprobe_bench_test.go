//go:build linux

package manager

// liveProbe: what grows between the rotations of BenchmarkLiveUpdateAgents
// (LOCKBOX_BENCH_LIVE_PROBE=1). After each pair of rotations it logs the
// manager's live heap and goroutines (after a GC), its CPU and the test
// process's (the simulated agents) since the last probe, the embedded
// etcd's revision, database size and key counts by prefix, and the
// reports the simulated agents still hold.

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lockbox-project/lockbox/manager/etcd"
	"github.com/lockbox-project/lockbox/manager/store"
)

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
	b.Logf("probe %d: wall %.1f s; manager CPU %.1f s, heap+stacks %.0f MiB, %d goroutines; agents' process CPU %.1f s, heap %.0f MiB, %d goroutines, %d reports pending; etcd rev %d, db %.0f MiB (in use %.0f MiB), keys %d: audit %d, containers %d, nodecontainers %d",
		i, wall.Seconds(), (mgr - p.mgrCPU).Seconds(), float64(heap)/(1<<20), goroutines,
		(self - p.selfCPU).Seconds(), float64(ms.HeapInuse)/(1<<20), runtime.NumGoroutine(), pending,
		st.Header.Revision, float64(st.DbSize)/(1<<20), float64(st.DbSizeInUse)/(1<<20),
		p.count(ctx, b, pre), p.count(ctx, b, pre+"audit/"), p.count(ctx, b, pre+"containers/"), p.count(ctx, b, pre+"nodecontainers/"))
	p.mgrCPU, p.selfCPU, p.at = procCPU(b, m.cmd.Process.Pid), procCPU(b, os.Getpid()), time.Now()
}
