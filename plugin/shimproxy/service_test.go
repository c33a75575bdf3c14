package shimproxy

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/lockbox-project/lockbox/plugin/claimrecord"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/anypb"
)

// Every call the proxy does not intercept reaches the inner shim as it
// was made.
func TestForwardsEveryCall(t *testing.T) {
	inner := newFakeInner()
	s := startProxyService(t, inner, newFakeAgent(), nil)
	ctx := context.Background()
	for _, tc := range []struct {
		want string
		call func() error
	}{
		{"state c1", func() error { _, err := s.State(ctx, &taskAPI.StateRequest{ID: "c1"}); return err }},
		{"start c1", func() error { _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "c1"}); return err }},
		{"pids c1", func() error { _, err := s.Pids(ctx, &taskAPI.PidsRequest{ID: "c1"}); return err }},
		{"pause c1", func() error { _, err := s.Pause(ctx, &taskAPI.PauseRequest{ID: "c1"}); return err }},
		{"resume c1", func() error { _, err := s.Resume(ctx, &taskAPI.ResumeRequest{ID: "c1"}); return err }},
		{"checkpoint c1", func() error { _, err := s.Checkpoint(ctx, &taskAPI.CheckpointTaskRequest{ID: "c1"}); return err }},
		{"exec c1/e1", func() error { _, err := s.Exec(ctx, &taskAPI.ExecProcessRequest{ID: "c1", ExecID: "e1"}); return err }},
		{"resizepty c1", func() error { _, err := s.ResizePty(ctx, &taskAPI.ResizePtyRequest{ID: "c1"}); return err }},
		{"closeio c1", func() error { _, err := s.CloseIO(ctx, &taskAPI.CloseIORequest{ID: "c1"}); return err }},
		{"update c1", func() error { _, err := s.Update(ctx, &taskAPI.UpdateTaskRequest{ID: "c1"}); return err }},
		{"stats c1", func() error { _, err := s.Stats(ctx, &taskAPI.StatsRequest{ID: "c1"}); return err }},
		{"connect c1", func() error { _, err := s.Connect(ctx, &taskAPI.ConnectRequest{ID: "c1"}); return err }},
		{"kill c1", func() error { _, err := s.Kill(ctx, &taskAPI.KillRequest{ID: "c1"}); return err }},
	} {
		t.Run(tc.want, func(t *testing.T) {
			before := len(inner.Calls())
			err := tc.call()
			if tc.want == "kill c1" {
				// No such task: the inner shim's error comes back as is.
				if err == nil || !strings.Contains(err.Error(), "task not found") {
					t.Fatalf("kill of an unknown task: %v, want the inner shim's not found", err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if got := inner.Calls()[before:]; !reflect.DeepEqual(got, []string{tc.want}) {
				t.Errorf("inner shim got %v, want [%s]", got, tc.want)
			}
		})
	}
	// Answers come back too.
	resp, err := s.Connect(ctx, &taskAPI.ConnectRequest{ID: "c1"})
	if err != nil || resp.TaskPid != inner.pid || resp.ShimPid != 1 {
		t.Errorf("Connect = %v, %v; want the inner shim's answer", resp, err)
	}
}

func TestCreate(t *testing.T) {
	claimWeb := map[string]string{"lockbox.service": "web"}
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		agentDown   bool
		createErr   error
		wantErr     string
		// wantCalls are the inner shim's calls; nil means as the platform
		// orders a refused claim (wantRefusedCalls).
		wantCalls    []string
		wantPrepares int
		wantRecord   bool
		refused      bool
	}{
		{name: "not claiming", annotations: nil, agentDown: true, wantCalls: []string{"create c1"}},
		{name: "pause container", annotations: map[string]string{"lockbox.service": "web", "io.kubernetes.cri.container-type": "sandbox"},
			agentDown: true, wantCalls: []string{"create c1"}},
		{name: "claim", annotations: claimWeb, wantCalls: []string{"create c1"}, wantPrepares: 1, wantRecord: true},
		{name: "not granted: fails closed, naming the service", annotations: map[string]string{"lockbox.service": "payments"},
			wantErr: `claims service "payments"`, wantPrepares: 1, refused: true},
		{name: "agent down fails before the inner create", annotations: claimWeb, agentDown: true,
			wantErr: "lockbox agent not reachable", wantCalls: []string{}},
		{name: "empty service", annotations: map[string]string{"lockbox.service": ""}, agentDown: true,
			wantErr: "is empty", wantCalls: []string{}},
		{name: "inner create fails: its error, and nothing held", annotations: claimWeb, createErr: errors.New("runtime says no"),
			wantErr: "runtime says no", wantCalls: []string{"create c1"}, wantPrepares: map[bool]int{false: 0, true: 1}[preparesBeforeCreate]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner := newFakeInner()
			inner.createErr = tc.createErr
			ag := newFakeAgent()
			ag.down = tc.agentDown
			s := startProxyService(t, inner, ag, nil)
			bundle := writeBundle(t, tc.annotations)
			ctx := namespaces.WithNamespace(context.Background(), "prod")
			_, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: bundle})
			if tc.wantErr == "" && err != nil {
				t.Fatalf("Create: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Create: %v, want an error with %q", err, tc.wantErr)
			}
			want := tc.wantCalls
			if tc.refused {
				want = []string{}
				if !preparesBeforeCreate {
					// Created, then taken back before anything could start it.
					want = []string{"create c1", "kill c1", "delete c1"}
				}
			}
			if got := inner.Calls(); !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
				t.Errorf("inner shim calls %v, want %v", got, want)
			}
			prepares, releases := ag.counts()
			if prepares != tc.wantPrepares {
				t.Errorf("%d prepares, want %d", prepares, tc.wantPrepares)
			}
			if prepares > 0 {
				c := ag.prepares[0].GetContainer()
				if !ag.prepares[0].GetAttach() || c.GetId() != "c1" || c.GetFacts().GetContainerdNamespace() != "prod" {
					t.Errorf("prepare %v: want an attach of c1 with namespace prod", ag.prepares[0])
				}
			}
			// What the agent was asked to hold, it was asked to release
			// when the create failed.
			if tc.wantErr != "" && prepares > 0 && releases != prepares {
				t.Errorf("%d releases after a failed create with %d prepares", releases, prepares)
			}
			rec, err := claimrecord.Read(bundle)
			if err != nil {
				t.Fatal(err)
			}
			if (rec != nil) != tc.wantRecord {
				t.Fatalf("record %+v, want one: %v", rec, tc.wantRecord)
			}
			if rec != nil && (rec.ID != "c1" || rec.Service != "web") {
				t.Errorf("record %+v, want c1 claiming web", rec)
			}
		})
	}
}

// The container's exit releases its secrets (the only wipe at exit on
// Windows), and the delete after it asks nothing more.
func TestExitReleases(t *testing.T) {
	inner := newFakeInner()
	ag := newFakeAgent()
	s := startProxyService(t, inner, ag, nil)
	bundle := writeBundle(t, map[string]string{"lockbox.service": "web"})
	ctx := context.Background()
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: bundle}); err != nil {
		t.Fatal(err)
	}
	if _, n := ag.counts(); n != 0 {
		t.Fatalf("released before the exit")
	}
	close(inner.exit)
	if id := <-ag.released; id != "c1" {
		t.Fatalf("released %s at exit, want c1", id)
	}
	s.relMu.Lock() // the release has removed the record
	rec, _ := claimrecord.Read(bundle)
	s.relMu.Unlock()
	if rec != nil {
		t.Errorf("record %+v kept after the release at exit", rec)
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	if _, n := ag.counts(); n != 1 {
		t.Errorf("%d releases after exit and delete, want 1", n)
	}
}

// Delete releases the container once, and not for an exec's delete.
func TestDeleteReleasesOnce(t *testing.T) {
	inner := newFakeInner()
	ag := newFakeAgent()
	s := startProxyService(t, inner, ag, nil)
	bundle := writeBundle(t, map[string]string{"lockbox.service": "web"})
	ctx := context.Background()
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: bundle}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1", ExecID: "e1"}); err != nil {
		t.Fatal(err)
	}
	if _, n := ag.counts(); n != 0 {
		t.Fatal("an exec's delete released the container")
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	if _, n := ag.counts(); n != 1 || ag.releases[0].GetContainerId() != "c1" {
		t.Fatalf("releases %v after the delete, want one of c1", ag.releases)
	}
	if rec, _ := claimrecord.Read(bundle); rec != nil {
		t.Errorf("record %+v kept after the release", rec)
	}
	// A second delete is the inner shim's not found, and no release.
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"}); err == nil {
		t.Error("second delete succeeded")
	}
	if _, n := ag.counts(); n != 1 {
		t.Errorf("%d releases after a second delete, want 1", n)
	}
}

// Shutdown ends the inner shim and the proxy only once no task is left.
func TestShutdownWhenNoTaskLeft(t *testing.T) {
	inner := newFakeInner()
	ended := make(chan struct{})
	s := startProxyService(t, inner, newFakeAgent(), func() { close(ended) })
	ctx := context.Background()
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: writeBundle(t, nil)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Shutdown(ctx, &taskAPI.ShutdownRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ended:
		t.Fatal("proxy shut down with a task left")
	default:
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Shutdown(ctx, &taskAPI.ShutdownRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	<-ended
	if got := inner.Calls(); !reflect.DeepEqual(got, []string{"create c1", "delete c1", "shutdown"}) {
		t.Errorf("inner shim calls %v", got)
	}
}

// An inner shim of the version 2 task API (runhcs) gets the same requests
// under its service name.
func TestInnerTaskAPIv2(t *testing.T) {
	got := make(chan *taskAPI.CreateTaskRequest, 1)
	client := serveFake(t, func(srv *ttrpc.Server) {
		srv.RegisterService(taskServiceV2, &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
			"Create": func(ctx context.Context, unmarshal func(any) error) (any, error) {
				var req taskAPI.CreateTaskRequest
				if err := unmarshal(&req); err != nil {
					return nil, err
				}
				got <- &req
				return &taskAPI.CreateTaskResponse{Pid: 42}, nil
			},
		}})
	})
	it, err := newInnerTasks(client, 2)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := it.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "c1", Bundle: `C:\b`, Terminal: true})
	if err != nil || resp.Pid != 42 {
		t.Fatalf("Create = %v, %v", resp, err)
	}
	if r := <-got; r.ID != "c1" || r.Bundle != `C:\b` || !r.Terminal {
		t.Errorf("inner shim got %v", r)
	}
	if _, err := newInnerTasks(client, 4); err == nil {
		t.Error("task API version 4 accepted")
	}
}

// CRI's generic options (a handler with an options table) are refused
// before the inner shim, which would panic on them, sees them; the inner
// shim's own options pass as they are.
func TestCreateOptions(t *testing.T) {
	generic, err := anypb.New(&runtimeoptions.Options{ConfigBody: []byte("BinaryName = 'runc'")})
	if err != nil {
		t.Fatal(err)
	}
	own, err := anypb.New(&runcoptions.Options{Root: "/run/x"})
	if err != nil {
		t.Fatal(err)
	}
	inner := newFakeInner()
	s := startProxyService(t, inner, newFakeAgent(), nil)
	ctx := context.Background()
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: writeBundle(t, nil), Options: generic}); err == nil || !strings.Contains(err.Error(), "options table out") {
		t.Fatalf("Create with CRI's generic options: %v, want a refusal", err)
	}
	if got := inner.Calls(); len(got) != 0 {
		t.Fatalf("inner shim got %v", got)
	}
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c2", Bundle: writeBundle(t, nil), Options: own}); err != nil {
		t.Fatal(err)
	}
	var o runcoptions.Options
	if err := inner.created[0].Options.UnmarshalTo(&o); err != nil || o.Root != "/run/x" {
		t.Errorf("inner shim got options %v (%v), want runc's Root /run/x", inner.created[0].Options, err)
	}
}
