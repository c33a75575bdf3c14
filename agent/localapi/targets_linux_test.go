package localapi

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/api/agent"
)

// targetsHandler is a fakeHandler that answers targets requests.
type targetsHandler struct {
	fakeHandler
	got []*agent.TargetsRequest
}

func (h *targetsHandler) Targets(ctx context.Context, req *agent.TargetsRequest) (*agent.TargetsResponse, error) {
	h.mu.Lock()
	h.got = append(h.got, req)
	h.mu.Unlock()
	if req.GetContainer().GetService() == "nope" {
		return nil, Errorf(agent.Error_NOT_GRANTED, "service %q has no grant", "nope")
	}
	return &agent.TargetsResponse{Targets: []string{"/run/secrets/a", "/etc/app/cert.pem"}}, nil
}

func TestTargetsRoundTrip(t *testing.T) {
	dir := t.TempDir()
	h := &targetsHandler{}
	sock := filepath.Join(dir, "run", "agent.sock")
	startServer(t, h, sock)
	c, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	resp, err := c.Targets(ctx, &agent.TargetsRequest{Container: &agent.Container{Id: "c1", Service: "web", ReadonlyRootfs: true}})
	if err != nil {
		t.Fatal(err)
	}
	if ts := resp.GetTargets(); !slices.Equal(ts, []string{"/run/secrets/a", "/etc/app/cert.pem"}) {
		t.Fatalf("targets %q", ts)
	}
	for _, tt := range []struct {
		name string
		c    *agent.Container
		code agent.Error_Code
	}{
		{"not granted", &agent.Container{Id: "c1", Service: "nope"}, agent.Error_NOT_GRANTED},
		{"no id", &agent.Container{Service: "web"}, agent.Error_INVALID},
		{"bad service name", &agent.Container{Id: "c1", Service: "-web"}, agent.Error_INVALID},
	} {
		_, err := c.Targets(ctx, &agent.TargetsRequest{Container: tt.c})
		var e *Error
		if !errors.As(err, &e) || e.Code != tt.code {
			t.Errorf("%s: %v, want %s", tt.name, err, tt.code)
		}
	}
	h.mu.Lock()
	n := len(h.got)
	h.mu.Unlock()
	if n != 2 {
		t.Errorf("handler saw %d targets requests, want 2 (the malformed ones stop at the server)", n)
	}
}

// A handler without Targets answers INVALID, not a broken connection.
func TestTargetsWithoutTargeter(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "agent.sock")
	startServer(t, &fakeHandler{dir: dir}, sock)
	c, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Targets(context.Background(), &agent.TargetsRequest{Container: &agent.Container{Id: "c1", Service: "web"}})
	var e *Error
	if !errors.As(err, &e) || e.Code != agent.Error_INVALID {
		t.Fatalf("targets from a handler without them: %v, want INVALID", err)
	}
	if _, err := c.List(context.Background()); err != nil {
		t.Fatalf("connection unusable after the refusal: %v", err)
	}
}
