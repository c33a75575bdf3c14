package localapi

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/api/agent"
)

type observation struct{ op, result string }

// chanObserver hands every observation to the test: the server observes
// after it answers, so the test waits on the channel, not on the answer.
type chanObserver chan observation

func (c chanObserver) ObserveRequest(op, result string, took time.Duration) {
	if took < 0 {
		op = "negative duration"
	}
	c <- observation{op, result}
}

func (c chanObserver) next(t *testing.T) observation {
	t.Helper()
	select {
	case o := <-c:
		return o
	case <-time.After(10 * time.Second):
		t.Fatal("no observation in 10s")
		return observation{}
	}
}

func TestObserver(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	obs := make(chanObserver, 16)
	s := NewServer(&fakeHandler{dir: dir, payload: "x"}, nil)
	s.SetObserver(obs)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	c, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	for _, tc := range []struct {
		name string
		call func() error
		want observation
	}{
		{"prepare ok", func() error {
			_, files, err := c.Prepare(ctx, &agent.PrepareRequest{Container: &agent.Container{Id: "a", Service: "web"}})
			closeAll(files)
			return err
		}, observation{"prepare", "OK"}},
		{"prepare not granted", func() error {
			_, _, err := c.Prepare(ctx, &agent.PrepareRequest{Container: &agent.Container{Id: "b", Service: "nope"}})
			return err
		}, observation{"prepare", "NOT_GRANTED"}},
		{"prepare invalid", func() error {
			_, _, err := c.Prepare(ctx, &agent.PrepareRequest{Container: &agent.Container{Service: "web"}})
			return err
		}, observation{"prepare", "INVALID"}},
		{"prepare handler failure", func() error {
			_, _, err := c.Prepare(ctx, &agent.PrepareRequest{Container: &agent.Container{Id: "c", Service: "boom"}})
			return err
		}, observation{"prepare", "UNKNOWN"}},
		{"release", func() error { return c.Release(ctx, "a") }, observation{"release", "OK"}},
		{"list", func() error { _, err := c.List(ctx); return err }, observation{"list", "OK"}},
	} {
		tc.call()
		if got := obs.next(t); got != tc.want {
			t.Errorf("%s: observed %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestObserverSeesRefusedCaller(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	obs := make(chanObserver, 4)
	s := NewServer(&fakeHandler{dir: dir}, nil)
	s.SetObserver(obs)
	// This test runs as root: make root the refused caller.
	s.allowUID = 65534
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := send(conn, &agent.Request{Op: &agent.Request_List{List: &agent.ListRequest{}}}, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := obs.next(t), (observation{"list", "PERMISSION_DENIED"}); got != want {
		t.Errorf("observed %+v, want %+v", got, want)
	}
}
