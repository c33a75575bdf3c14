package localapi

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/api/agent"
)

// TestPrepareRequestValidation covers what the server refuses before a
// handler sees the request.
func TestPrepareRequestValidation(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	h := &fakeHandler{dir: dir, payload: "x"}
	startServer(t, h, sock)
	c, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	tests := []struct {
		name string
		req  *agent.PrepareRequest
	}{
		// The agent attaching with no pid would attach in its own mount
		// namespace: the host's.
		{"attach without pid", &agent.PrepareRequest{Attach: true, Container: &agent.Container{Id: "c1", Service: "web", Rootfs: "/"}}},
		{"attach with negative pid", &agent.PrepareRequest{Attach: true, Container: &agent.Container{Id: "c1", Service: "web", Pid: -1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, files, err := c.Prepare(ctx, tt.req)
			closeAll(files)
			if !IsCode(err, agent.Error_INVALID) {
				t.Errorf("prepare %v: %v, want INVALID", tt.req, err)
			}
		})
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.prepared) != 0 {
		t.Errorf("handler reached with %v", h.prepared)
	}
}
