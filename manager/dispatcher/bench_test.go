package dispatcher

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/internal/testutil/benchinfo"
	"github.com/lockbox-project/lockbox/manager/etcd/etcdtest"
	"github.com/lockbox-project/lockbox/manager/keys"
	"github.com/lockbox-project/lockbox/manager/store"
)

// The benchmarks drive the dispatcher with simulated agents: each session
// is a real Serve loop writing to an in-memory Sender (no TLS, no HTTP/2),
// so they measure the dispatcher's own fan-out and per-session cost. The
// baseline, measured in the same run, is one raw etcd watch seeing a put:
// the floor any watch-driven fan-out sits on.

type arrival struct {
	rev int64
	at  time.Time
}

// benchStream records when each message leaves the dispatcher.
type benchStream struct {
	ctx      context.Context
	arrivals chan<- arrival
}

func (s *benchStream) Context() context.Context { return s.ctx }
func (s *benchStream) SendMsg(v any) error {
	// What gRPC would do with the message short of writing it.
	data, err := Codec{}.Marshal(v)
	if err != nil {
		return err
	}
	data.Free()
	s.arrivals <- arrival{rev: v.(*encodedMessage).rev, at: time.Now()}
	return nil
}

type benchCluster struct {
	st       *store.Store
	d        *Dispatcher
	svc      *types.Service
	arrivals chan arrival
	n        int
	cancel   context.CancelFunc
}

// setup creates n nodes, one service placed on all of them, and n
// connected sessions that have received their COMPLETE message.
func setupBench(b *testing.B, n int) *benchCluster {
	m := etcdtest.Start(b)
	ring, err := keys.NewKeyring()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(ring.Close)
	st := store.New(m.Client(), ring)
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)

	ids := make([]string, n)
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				node, err := st.CreateNode(ctx, &types.Node{Description: &types.NodeDescription{Hostname: fmt.Sprintf("n%d", i)}})
				if err != nil {
					b.Error(err)
					return
				}
				ids[i] = node.Id
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	sec, err := st.CreateSecret(ctx, &types.SecretSpec{Name: "s"}, []byte("data"))
	if err != nil {
		b.Fatal(err)
	}
	svc, err := st.CreateService(ctx, spec("svc", nil, sec))
	if err != nil {
		b.Fatal(err)
	}
	d := New(Config{Store: st})
	go d.Run(ctx)
	rev, _ := st.Revision(ctx)
	if err := d.WaitIndexed(ctx, rev); err != nil {
		b.Fatal(err)
	}
	bc := &benchCluster{st: st, d: d, svc: svc, arrivals: make(chan arrival, 4*n), n: n, cancel: cancel}
	for _, id := range ids {
		go d.Serve(&benchStream{ctx: ctx, arrivals: bc.arrivals}, id, current(0))
	}
	for i := 0; i < n; i++ {
		<-bc.arrivals // COMPLETE
	}
	return bc
}

// update changes the service and returns, for each session, the time
// from the call to the message carrying the change leaving the dispatcher.
func (bc *benchCluster) update(b *testing.B, i int) []time.Duration {
	ctx := context.Background()
	sp := bc.svc.Spec
	sp.Labels = map[string]string{"round": fmt.Sprint(i)}
	t0 := time.Now()
	svc, err := bc.st.UpdateService(ctx, bc.svc.Id, bc.svc.Meta.Version, sp)
	if err != nil {
		b.Fatal(err)
	}
	bc.svc = svc
	want := int64(svc.Meta.Version)
	out := make([]time.Duration, 0, bc.n)
	for len(out) < bc.n {
		a := <-bc.arrivals
		if a.rev >= want {
			out = append(out, a.at.Sub(t0))
		}
	}
	return out
}

func percentile(d []time.Duration, p float64) time.Duration {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[int(float64(len(d)-1)*p)]
}

// etcdWatchBaseline is the median time from a put to a watcher seeing it.
func etcdWatchBaseline(b *testing.B, st *store.Store) time.Duration {
	cli := st.Client()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wch := cli.Watch(ctx, "/bench/baseline")
	var ds []time.Duration
	for i := 0; i < 30; i++ {
		t0 := time.Now()
		if _, err := cli.Put(ctx, "/bench/baseline", fmt.Sprint(i)); err != nil {
			b.Fatal(err)
		}
		<-wch
		ds = append(ds, time.Since(t0))
	}
	return percentile(ds, 0.5)
}

func BenchmarkFanOut(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) {
			bc := setupBench(b, n)
			base := etcdWatchBaseline(b, bc.st)
			var all []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				all = append(all, bc.update(b, i)...)
			}
			b.StopTimer()
			p50, p99 := percentile(all, 0.5), percentile(all, 0.99)
			b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(base.Microseconds())/1000, "baseline-watch-ms")
			b.ReportMetric(float64(p99)/float64(base), "p99/baseline")
			benchinfo.Print(b)
		})
	}
}

// BenchmarkSessionMemory measures the dispatcher's memory per idle
// session (heap plus goroutine stacks), against the same process before
// the sessions connect.
func BenchmarkSessionMemory(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				bc := setupBenchSessionsOnly(b, n)
				bc.cancel()
			}
			benchinfo.Print(b)
		})
	}
}

func memNow() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc + ms.StackInuse
}

// setupBenchSessionsOnly is setupBench with the node creation outside the
// measured span: only the sessions are counted.
func setupBenchSessionsOnly(b *testing.B, n int) *benchCluster {
	b.StopTimer()
	bc := setupBench(b, 0)
	ctx := context.Background()
	ids := make([]string, n)
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				node, err := bc.st.CreateNode(ctx, &types.Node{Description: &types.NodeDescription{Hostname: fmt.Sprintf("n%d", i)}})
				if err != nil {
					b.Error(err)
					return
				}
				ids[i] = node.Id
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	rev, _ := bc.st.Revision(ctx)
	if err := bc.d.WaitIndexed(ctx, rev); err != nil {
		b.Fatal(err)
	}
	arrivals := make(chan arrival, n)
	before := memNow()
	sctx, cancel := context.WithCancel(ctx)
	for _, id := range ids {
		go bc.d.Serve(&benchStream{ctx: sctx, arrivals: arrivals}, id, current(0))
	}
	for i := 0; i < n; i++ {
		<-arrivals
	}
	after := memNow()
	b.ReportMetric(float64(after-before)/float64(n), "bytes/stream")
	bc.cancel = cancel
	b.StartTimer()
	return bc
}
