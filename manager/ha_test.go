//go:build linux

package manager

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/etcd"
)

// childConfig is how the test tells a child process which manager to run.
type childConfig struct {
	DataDir, ListenAddr, AdminSocket string
	EtcdPeerPort                     int
	JoinAddr, JoinToken              string
	// MetricsAddr and HeartbeatPeriod (default 1s) are for benchmarks.
	MetricsAddr     string
	HeartbeatPeriod time.Duration
	// NoUnauthLimit lifts the per-address limit on joins (benchmarks
	// join thousands of nodes from one address).
	NoUnauthLimit bool
}

// runManagerChild runs a manager in this (child) process: the test kills
// it with SIGKILL, which an in-process manager cannot be.
func runManagerChild() int {
	var cc childConfig
	if err := json.Unmarshal([]byte(os.Getenv("LOCKBOX_TEST_RUN_MANAGER")), &cc); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if cc.HeartbeatPeriod == 0 {
		cc.HeartbeatPeriod = time.Second
	}
	cfg := Config{
		DataDir: cc.DataDir, ListenAddr: cc.ListenAddr, AdminSocket: cc.AdminSocket, EtcdPeerPort: cc.EtcdPeerPort,
		JoinAddr: cc.JoinAddr, JoinToken: []byte(cc.JoinToken), HeartbeatPeriod: cc.HeartbeatPeriod, MetricsAddr: cc.MetricsAddr,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Out:    io.Discard,
	}
	if cc.NoUnauthLimit {
		cfg.UnauthRate = rate.Inf
	}
	m, err := New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	go func() {
		<-m.Ready()
		fmt.Printf("READY %s %s\n", m.Addr(), m.NodeID())
	}()
	// SIGUSR1: report live memory (after a GC) and the allocations so far
	// for the benchmarks; with LOCKBOX_TEST_HEAPPROFILE, also write a heap
	// profile, to that path plus ".N" for the Nth report, sampled finely
	// enough to attribute a few hundred bytes per stream.
	heapProfile := os.Getenv("LOCKBOX_TEST_HEAPPROFILE")
	if heapProfile != "" {
		runtime.MemProfileRate = 512
	}
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	go func() {
		profiles := 0
		for range usr1 {
			runtime.GC()
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			fmt.Printf("MEM %d %d %d %d\n", ms.HeapAlloc, ms.StackInuse, runtime.NumGoroutine(), ms.Mallocs)
			profiles++
			writeHeapProfile(heapProfile, profiles)
		}
	}()
	// SIGUSR2 starts, and the next one stops, a CPU profile written to
	// LOCKBOX_TEST_CPUPROFILE: the benchmarks profile the fan-out alone.
	if path := os.Getenv("LOCKBOX_TEST_CPUPROFILE"); path != "" {
		usr2 := make(chan os.Signal, 1)
		signal.Notify(usr2, syscall.SIGUSR2)
		go toggleCPUProfile(path, os.Getenv("LOCKBOX_TEST_TRACE") != "", usr2)
	}
	if err := m.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func writeHeapProfile(path string, n int) {
	if path == "" {
		return
	}
	f, err := os.Create(fmt.Sprintf("%s.%d", path, n))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
}

func toggleCPUProfile(path string, withTrace bool, sig <-chan os.Signal) {
	for range sig {
		f, err := os.Create(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			f.Close()
			return
		}
		// LOCKBOX_TEST_TRACE: an execution trace beside the profile, to
		// see where the fan-out waits rather than where it computes.
		var tf *os.File
		if withTrace {
			if tf, err = os.Create(path + ".trace"); err == nil {
				err = trace.Start(tf)
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
			}
		}
		<-sig
		pprof.StopCPUProfile()
		f.Close()
		if tf != nil {
			trace.Stop()
			tf.Close()
		}
		fmt.Println("PROFILED")
	}
}

type childManager struct {
	t      testing.TB
	cc     childConfig
	cmd    *exec.Cmd
	addr   string
	nodeID string
	exited chan struct{}
	mem    chan string
	// profiled receives when a CPU profile is written (SIGUSR2).
	profiled chan struct{}
}

func newChildConfig(t testing.TB, ip string) childConfig {
	dir := t.TempDir()
	port := freePort(t, ip)
	return childConfig{
		DataDir:      filepath.Join(dir, "data"),
		ListenAddr:   fmt.Sprintf("%s:%d", ip, port),
		AdminSocket:  filepath.Join(dir, "run", "manager.sock"),
		EtcdPeerPort: freePort(t, ip),
	}
}

func startChild(t testing.TB, cc childConfig) *childManager {
	t.Helper()
	b, _ := json.Marshal(cc)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "LOCKBOX_TEST_RUN_MANAGER="+string(b))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &childManager{t: t, cc: cc, cmd: cmd, exited: make(chan struct{}), mem: make(chan string, 1), profiled: make(chan struct{}, 1)}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "READY ") {
				ready <- sc.Text()
			}
			if strings.HasPrefix(sc.Text(), "MEM ") {
				c.mem <- sc.Text()
			}
			if sc.Text() == "PROFILED" {
				c.profiled <- struct{}{}
			}
		}
		cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(c.kill)
	select {
	case line := <-ready:
		f := strings.Fields(line)
		c.addr, c.nodeID = f[1], f[2]
	case <-c.exited:
		t.Fatalf("manager %s exited before it was ready", cc.ListenAddr)
	case <-time.After(90 * time.Second):
		t.Fatalf("manager %s not ready in 90s", cc.ListenAddr)
	}
	return c
}

// liveMemory is the child's live heap plus goroutine stacks after a GC.
func (c *childManager) liveMemory() (int64, int) {
	live, goroutines, _ := c.memStats()
	return live, goroutines
}

// memStats is liveMemory plus the number of heap allocations so far.
func (c *childManager) memStats() (live int64, goroutines int, mallocs uint64) {
	c.cmd.Process.Signal(syscall.SIGUSR1)
	select {
	case line := <-c.mem:
		var heap, stack int64
		fmt.Sscanf(line, "MEM %d %d %d %d", &heap, &stack, &goroutines, &mallocs)
		return heap + stack, goroutines, mallocs
	case <-time.After(30 * time.Second):
		c.t.Fatal("no memory report from the manager")
		return 0, 0, 0
	}
}

// kill sends SIGKILL: no shutdown code runs, as in a crash.
func (c *childManager) kill() {
	if c.cmd.Process != nil {
		c.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-c.exited
}

func (c *childManager) admin() adminapi.AdminClient {
	conn, err := grpc.NewClient("unix://"+c.cc.AdminSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { conn.Close() })
	return adminapi.NewAdminClient(conn)
}

// etcdLeader asks a member which member leads, and maps it to a node ID.
func etcdLeader(t testing.TB, via *childManager) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ep := "unix://" + etcd.ClientSocket(filepath.Join(via.cc.DataDir, "etcd"))
	cli, err := etcd.Connect(ctx, []string{ep}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	st, err := cli.Status(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	list, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range list.Members {
		if m.ID == st.Leader {
			return m.Name
		}
	}
	t.Fatalf("leader %x not in %v", st.Leader, list.Members)
	return ""
}

// retry repeats f until it succeeds: right after a leader dies, etcd
// refuses writes until a new one is elected.
func retry(t testing.TB, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestHAKillLeader(t *testing.T) {
	ctx := context.Background()
	m1 := startChild(t, newChildConfig(t, "127.0.0.1"))
	// Manager tokens are single-use: one per join.
	cc2, cc3 := newChildConfig(t, "127.0.0.2"), newChildConfig(t, "127.0.0.3")
	cc2.JoinAddr, cc2.JoinToken = m1.addr, token(t, m1.admin(), types.NodeRole_NODE_ROLE_MANAGER, false)
	m2 := startChild(t, cc2)
	cc3.JoinAddr, cc3.JoinToken = m1.addr, token(t, m1.admin(), types.NodeRole_NODE_ROLE_MANAGER, false)
	m3 := startChild(t, cc3)
	all := map[string]*childManager{m1.nodeID: m1, m2.nodeID: m2, m3.nodeID: m3}

	adm := m1.admin()
	n := joinNode(t, m1.addr, token(t, adm, types.NodeRole_NODE_ROLE_WORKER, false), "agent")
	s1 := createSecret(t, adm, "before", "b")
	createService(t, adm, "svc-before", nil, s1)

	leaderID := etcdLeader(t, m1)
	leader := all[leaderID]
	var others []*childManager
	for id, m := range all {
		if id != leaderID {
			others = append(others, m)
		}
	}
	// The agent's stream is on the leader's manager.
	s := n.session(t, leader.addr, 0)
	first := s.until(func(m *dapi.SessionMessage) bool { return names(m)["+service:svc-before"] })
	// The list of managers reaches the agent as managers register.
	if len(first.Managers) != 3 {
		first = s.until(func(m *dapi.SessionMessage) bool { return len(m.Managers) == 3 })
	}

	leader.kill()
	if err := s.ended(); err == nil {
		t.Fatal("stream on the killed manager did not end")
	}

	// Writes still succeed through a survivor.
	surv := others[0].admin()
	var s2 *types.Secret
	retry(t, "create secret after the leader died", func() error {
		r, err := surv.CreateSecret(ctx, &adminapi.CreateSecretRequest{Spec: &types.SecretSpec{Name: "after"}, Data: []byte("a")})
		if err == nil {
			s2 = r.Secret
		}
		return err
	})
	retry(t, "create service after the leader died", func() error {
		_, err := surv.CreateService(ctx, &adminapi.CreateServiceRequest{Spec: &types.ServiceSpec{Name: "svc-after",
			Secrets: []*types.SecretReference{{SecretId: s2.Id, SecretName: "after", Target: &types.FileTarget{Name: "after"}}}}})
		return err
	})
	if got := etcdLeader(t, others[1]); got == leaderID {
		t.Fatal("no new leader")
	}

	// The agent reconnects to another manager (from the list the stream
	// gave it) and gets the complete set, including what changed meanwhile.
	var next string
	for _, a := range first.Managers {
		if a != leader.addr {
			next = a
			break
		}
	}
	s = n.session(t, next, 0)
	m := s.until(func(m *dapi.SessionMessage) bool {
		return m.Type == dapi.SessionMessage_COMPLETE
	})
	got := names(m)
	if !got["+service:svc-before"] || !got["+secret:before"] {
		// The after-service may land in a following INCREMENTAL if the
		// survivor's index trailed the write by a few ms.
		t.Fatalf("complete set after failover: %v", got)
	}
	if !got["+service:svc-after"] {
		s.until(func(m *dapi.SessionMessage) bool { return names(m)["+service:svc-after"] })
	}
}

func TestKillDuringCreates(t *testing.T) {
	ctx := context.Background()
	cc := newChildConfig(t, "127.0.0.1")
	m := startChild(t, cc)
	adm := m.admin()

	const total, workers = 1000, 4
	var mu sync.Mutex
	var ok []string
	var wg sync.WaitGroup
	next := make(chan int)
	killed := make(chan struct{})
	go func() {
		defer close(next)
		for i := 0; i < total; i++ {
			select {
			case next <- i:
			case <-killed:
				return
			}
		}
	}()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				name := fmt.Sprintf("s-%04d", i)
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := adm.CreateSecret(cctx, &adminapi.CreateSecretRequest{Spec: &types.SecretSpec{Name: name}, Data: []byte(name)})
				cancel()
				if err == nil {
					mu.Lock()
					ok = append(ok, name)
					n := len(ok)
					mu.Unlock()
					if n == total/3 {
						// Kill in the middle of the stream of writes.
						m.kill()
						close(killed)
					}
				}
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	acked := append([]string(nil), ok...)
	mu.Unlock()
	if len(acked) < total/3 {
		t.Fatalf("only %d creates succeeded before the kill", len(acked))
	}

	m = startChild(t, cc)
	r, err := m.admin().ListSecrets(ctx, &adminapi.ListSecretsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, s := range r.Secrets {
		have[s.Spec.Name] = true
	}
	var lost []string
	for _, name := range acked {
		if !have[name] {
			lost = append(lost, name)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged creates lost after kill -9: %v", len(lost), len(acked), lost)
	}
	t.Logf("%d creates acknowledged before kill -9, all %d present after restart (%d stored)", len(acked), len(acked), len(r.Secrets))
}
