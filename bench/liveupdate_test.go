//go:build linux

package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/lockbox-project/lockbox/agent/localapi"
	adminapi "github.com/lockbox-project/lockbox/api/admin"
	api "github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/integration/harness"
	"github.com/lockbox-project/lockbox/internal/testutil/benchinfo"
	"github.com/lockbox-project/lockbox/internal/testutil/busybox"
)

// BenchmarkLiveUpdate measures a live update (issue 14) end to end on one
// node: from the admin UpdateService call that rotates a service's secret
// (same target, new secret) on a real manager to the moment the last of
// the service's running containers reads the new file, through a real
// agent (lockbox binaries from LOCKBOX_BIN). One iteration is one rotation;
// it reports p50 and p99 of that latency and the cost per container (the
// p50 less the one-container p50 of the same run, over the containers
// added).
//
// A "container" here is what the agent's update touches of one: a process
// in its own mount namespace, chrooted into a busybox root shared by all
// (unshare -m, then chroot), attached by pid as the runtime wrapper and
// NRI attach, with its file at /run/secrets/rot. What runc adds at start
// (cgroups, the other namespaces) plays no part in an update; starting a
// thousand real ones would only make the set slow. Sizes are
// LOCKBOX_BENCH_LIVE_SIZES (default "1,100"; "1,100,1000" fits on 2 cores).
func BenchmarkLiveUpdate(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (mount namespaces, the agent)")
	}
	bin := os.Getenv("LOCKBOX_BIN")
	if bin == "" {
		b.Skip("LOCKBOX_BIN is not set: run make bench, or set it to the built bin/")
	}
	sizes := []int{1, 100}
	if s := os.Getenv("LOCKBOX_BENCH_LIVE_SIZES"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				b.Fatalf("LOCKBOX_BENCH_LIVE_SIZES=%q", s)
			}
			sizes = append(sizes, n)
		}
	}
	m := harness.StartManager(b, bin)
	a := harness.StartAgent(b, bin, m)
	conn, err := grpc.NewClient("unix://"+m.AdminSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	admin := adminapi.NewAdminClient(conn)
	root := b.TempDir()
	if err := busybox.Rootfs(root); err != nil {
		b.Fatal(err)
	}
	var one time.Duration
	for _, n := range sizes {
		b.Run(fmt.Sprintf("containers=%d", n), func(b *testing.B) {
			p50 := benchLiveUpdate(b, admin, a, root, n)
			if n == 1 {
				one = p50
			} else if one > 0 {
				b.ReportMetric(float64((p50-one).Microseconds())/float64(n-1), "µs/container")
			}
		})
	}
}

// liveSvc rotates one service's secret through the admin API.
type liveSvc struct {
	admin adminapi.AdminClient
	name  string
	svc   *types.Service
	n     int
}

func (l *liveSvc) rotate(ctx context.Context) (string, error) {
	l.n++
	data := fmt.Sprintf("%s-v%d", l.name, l.n)
	s, err := l.admin.CreateSecret(ctx, &adminapi.CreateSecretRequest{Spec: &types.SecretSpec{Name: fmt.Sprintf("%s-%d", l.name, l.n)}, Data: []byte(data)})
	if err != nil {
		return "", err
	}
	spec := &types.ServiceSpec{Name: l.name, LiveUpdate: true, Secrets: []*types.SecretReference{{
		SecretId: s.GetSecret().GetId(), SecretName: s.GetSecret().GetSpec().GetName(), Target: &types.FileTarget{Name: "rot"}}}}
	if l.svc == nil {
		resp, err := l.admin.CreateService(ctx, &adminapi.CreateServiceRequest{Spec: spec})
		if err != nil {
			return "", err
		}
		l.svc = resp.GetService()
		return data, nil
	}
	resp, err := l.admin.UpdateService(ctx, &adminapi.UpdateServiceRequest{NameOrId: l.svc.GetId(), Version: l.svc.GetMeta().GetVersion(), Spec: spec})
	if err != nil {
		return "", err
	}
	l.svc = resp.GetService()
	return data, nil
}

var liveCalls int

func benchLiveUpdate(b *testing.B, admin adminapi.AdminClient, a *harness.Agent, root string, n int) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	// The testing package calls a benchmark again with a larger b.N: each
	// call has its own service and containers.
	liveCalls++
	svc := &liveSvc{admin: admin, name: fmt.Sprintf("live%d-%d", n, liveCalls)}
	want, err := svc.rotate(ctx)
	if err != nil {
		b.Fatal(err)
	}
	cl, err := localapi.Dial(a.Socket)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	// The containers: each a sleeping process in its own mount namespace,
	// chrooted into root.
	files := make([]string, n)
	for i := range n {
		cmd := exec.Command("unshare", "-m", "--propagation", "private", "chroot", root, "/bin/sleep", "3600")
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cmd.Process.Signal(syscall.SIGKILL); cmd.Wait() })
		// unshare execs chroot, which execs sleep: the pid stays; wait
		// until it is in its own namespace and root.
		pid := cmd.Process.Pid
		for {
			if r, err := os.Readlink(fmt.Sprintf("/proc/%d/root", pid)); err == nil && r == root {
				break
			}
			time.Sleep(time.Millisecond)
		}
		id := fmt.Sprintf("%s-%d", svc.name, i)
		var perr error
		for try := 0; try < 500; try++ { // the first may come before the grant
			_, _, perr = cl.Prepare(ctx, &api.PrepareRequest{Attach: true, Container: &api.Container{Id: id, Service: svc.name, Pid: int32(pid)}})
			if perr == nil || !strings.Contains(perr.Error(), "no grant") {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if perr != nil {
			b.Fatalf("prepare %s: %v", id, perr)
		}
		b.Cleanup(func() { cl.ReleaseProcess(context.Background(), id, int32(pid), 0) })
		files[i] = fmt.Sprintf("/proc/%d/root/run/secrets/rot", pid)
	}
	waitAll(b, files, want, time.Minute)
	benchinfo.Print(b)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		want, err := svc.rotate(ctx)
		if err != nil {
			b.Fatal(err)
		}
		waitAll(b, files, want, time.Minute)
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p := func(q float64) time.Duration { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
	b.ReportMetric(float64(p(0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p(0.99).Microseconds())/1000, "p99-ms")
	return p(0.5)
}

// waitAll polls files (in order: each is read until it holds want) and
// fails after timeout. Polling is how a reader in the container would see
// it; one pass over 1,000 files takes a few milliseconds, which bounds the
// resolution at that size.
func waitAll(b *testing.B, files []string, want string, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for _, f := range files {
		for {
			got, err := os.ReadFile(f)
			if err == nil && string(got) == want {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s holds %q (%v), want %q", f, got, err, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
}
