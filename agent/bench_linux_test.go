package agent

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/lockbox-project/lockbox/agent/grants"
	"github.com/lockbox-project/lockbox/agent/localapi"
	api "github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/internal/testutil/benchinfo"
	"github.com/lockbox-project/lockbox/linux"
)

// benchCache holds service web with n secrets of size bytes.
func benchCache(b *testing.B, n, size int) *grants.Cache {
	c := grants.NewCache()
	b.Cleanup(c.Close)
	msg := &dispatcher.SessionMessage{Type: dispatcher.SessionMessage_COMPLETE, Revision: 1}
	svc := &dispatcher.ServiceGrants{ServiceId: "svc", ServiceName: "web"}
	for i := range n {
		id := fmt.Sprintf("s%d", i)
		msg.Changes = append(msg.Changes, &dispatcher.AssignmentChange{Assignment: &dispatcher.Assignment{Item: &dispatcher.Assignment_Secret{
			Secret: &dispatcher.SecretData{Id: id, Name: id, Data: bytes.Repeat([]byte{'x'}, size)}}}})
		svc.Grants = append(svc.Grants, &dispatcher.Grant{SecretId: id, SecretName: id})
	}
	msg.Changes = append(msg.Changes, &dispatcher.AssignmentChange{Assignment: &dispatcher.Assignment{Item: &dispatcher.Assignment_Service{Service: svc}}})
	if err := c.Apply(msg); err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkLocalAPI measures what a container start pays the agent: a
// prepare that builds the tmpfs and hands its fd over, then the release
// that wipes it, over the real socket. The baseline, in the same run, is a
// List round trip: the cost of the protocol alone.
func BenchmarkLocalAPI(b *testing.B) {
	for _, tc := range []struct{ n, size int }{{1, 4 << 10}, {10, 4 << 10}, {50, 4 << 10}} {
		a, err := New(Config{StateDir: b.TempDir(), Grants: benchCache(b, tc.n, tc.size), Mounter: linux.New(), Log: testLog(nil)})
		if err != nil {
			b.Fatal(err)
		}
		sock := filepath.Join(b.TempDir(), "agent.sock")
		ln, err := localapi.Listen(sock)
		if err != nil {
			b.Fatal(err)
		}
		srv := localapi.NewServer(a, testLog(nil))
		go srv.Serve(ln)
		cl, err := localapi.Dial(sock)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.Run(fmt.Sprintf("list-baseline/%dx%dKiB", tc.n, tc.size>>10), func(b *testing.B) {
			for b.Loop() {
				if _, err := cl.List(ctx); err != nil {
					b.Fatal(err)
				}
			}
			benchinfo.Print(b)
		})
		b.Run(fmt.Sprintf("prepare-release/%dx%dKiB", tc.n, tc.size>>10), func(b *testing.B) {
			req := &api.PrepareRequest{Container: &api.Container{Id: "bench", Service: "web", Rootfs: "/nonexistent"}}
			for b.Loop() {
				_, files, err := cl.Prepare(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				for _, f := range files {
					f.Close()
				}
				if err := cl.Release(ctx, "bench"); err != nil {
					b.Fatal(err)
				}
			}
			benchinfo.Print(b)
		})
		cl.Close()
		srv.Close()
	}
}
