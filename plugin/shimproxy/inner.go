package shimproxy

import (
	"context"
	"fmt"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// The task service names of the two shim API versions. A shim reports its
// version in its bootstrap result (runc's: 3); one that prints a bare
// address (hcsshim's runhcs) speaks version 2. The two versions' messages
// are the same protobuf fields under two package names, so one set of Go
// types serves both on the wire: only the service name differs.
const (
	taskServiceV2 = "containerd.task.v2.Task"
	taskServiceV3 = "containerd.task.v3.Task"
)

// taskServiceName is the TTRPC service of a shim that reported version.
func taskServiceName(version int32) (string, error) {
	switch version {
	case 2:
		return taskServiceV2, nil
	case 3:
		return taskServiceV3, nil
	}
	return "", fmt.Errorf("inner shim speaks task API version %d; this proxy knows 2 and 3", version)
}

// innerTasks is the inner shim's task service as a client: every method
// is one TTRPC call of the same name, whatever the shim's API version.
type innerTasks struct {
	client  *ttrpc.Client
	service string
}

var _ taskAPI.TTRPCTaskService = (*innerTasks)(nil)

func newInnerTasks(client *ttrpc.Client, version int32) (*innerTasks, error) {
	svc, err := taskServiceName(version)
	if err != nil {
		return nil, err
	}
	return &innerTasks{client: client, service: svc}, nil
}

// call makes one call and returns its response, or nil and the error.
func call[T any](ctx context.Context, t *innerTasks, method string, req any) (*T, error) {
	var resp T
	if err := t.client.Call(ctx, t.service, method, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

func (t *innerTasks) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	return call[taskAPI.StateResponse](ctx, t, "State", r)
}

func (t *innerTasks) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	return call[taskAPI.CreateTaskResponse](ctx, t, "Create", r)
}

func (t *innerTasks) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	return call[taskAPI.StartResponse](ctx, t, "Start", r)
}

func (t *innerTasks) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	return call[taskAPI.DeleteResponse](ctx, t, "Delete", r)
}

func (t *innerTasks) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	return call[taskAPI.PidsResponse](ctx, t, "Pids", r)
}

func (t *innerTasks) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*emptypb.Empty, error) {
	return call[emptypb.Empty](ctx, t, "Pause", r)
}

func (t *innerTasks) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*emptypb.Empty, error) {
	return call[emptypb.Empty](ctx, t, "Resume", r)
}

func (t *innerTasks) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return call[emptypb.Empty](ctx, t, "Checkpoint", r)
}

func (t *innerTasks) Kill(ctx context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
	return call[emptypb.Empty](ctx, t, "Kill", r)
}

func (t *innerTasks) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	return call[emptypb.Empty](ctx, t, "Exec", r)
}

func (t *innerTasks) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	return call[emptypb.Empty](ctx, t, "ResizePty", r)
}

func (t *innerTasks) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*emptypb.Empty, error) {
	return call[emptypb.Empty](ctx, t, "CloseIO", r)
}

func (t *innerTasks) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	return call[emptypb.Empty](ctx, t, "Update", r)
}

func (t *innerTasks) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	return call[taskAPI.WaitResponse](ctx, t, "Wait", r)
}

func (t *innerTasks) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	return call[taskAPI.StatsResponse](ctx, t, "Stats", r)
}

func (t *innerTasks) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	return call[taskAPI.ConnectResponse](ctx, t, "Connect", r)
}

func (t *innerTasks) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	return call[emptypb.Empty](ctx, t, "Shutdown", r)
}
