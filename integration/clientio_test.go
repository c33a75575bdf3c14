//go:build integration && linux

package integration

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/lockbox-project/lockbox/integration/harness"
)

// gatedWriter holds its first Write until gate is closed, as a client
// goroutine that the scheduler has not run yet would: the copy goroutine
// has read the first chunk and has not come back for the rest.
type gatedWriter struct {
	gate    chan struct{}
	entered chan struct{}
	once    sync.Once
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (w *gatedWriter) Write(p []byte) (int, error) {
	w.once.Do(func() {
		close(w.entered)
		<-w.gate
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *gatedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// fifoOpen reports whether this process still has path open.
func fifoOpen(t *testing.T, path string) bool {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && l == path {
			return true
		}
	}
	return false
}

// The cause of the rare lost output of TestCyclesLeaveNothing, shown with
// plain runc and no Lockbox part: containerd 2.4.2's client Task.Delete
// calls cio's Cancel, which closes the client's ends of the stdout/stderr
// FIFOs before it waits for the copy goroutines (the comment beside the
// call says the opposite). Whatever the container wrote that the
// client's goroutine had not read yet is dropped, and the run ends with
// exit 0 and part or all of its output missing. The window is the time
// between the container's last write and the client's Delete; on a loaded
// 2-core machine a goroutine is late about once in a thousand runs. Here
// the goroutine is held on purpose, so the loss happens every time, and
// waiting for the IO before Delete (what harness.GoRun does) keeps it all.
func TestClientDeleteDropsUnreadOutput(t *testing.T) {
	c := harness.StartContainerd(t, harness.Options{})
	c.Import("default", harness.ImageConfig{Name: busybox})
	cl, ctx := c.Client("default")
	img, err := cl.GetImage(ctx, busybox)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		waitIO     bool
		wantSecond bool
	}{
		{"delete-right-after-exit", false, false},
		{"wait-for-io-then-delete", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "io-" + tc.name
			ctr, err := cl.NewContainer(ctx, id,
				containerd.WithNewSnapshot(id, img),
				containerd.WithRuntime("io.containerd.runc.v2", &options.Options{Root: c.RuncRoot}),
				containerd.WithNewSpec(oci.WithImageConfig(img),
					// The first line reaches the client before the second
					// is written: two reads, the second one held back.
					oci.WithProcessArgs("sh", "-c", "echo first; sleep 0.2; echo second")),
			)
			if err != nil {
				t.Fatal(err)
			}
			defer ctr.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup)
			stdout := &gatedWriter{gate: make(chan struct{}), entered: make(chan struct{})}
			var stderr bytes.Buffer
			task, err := ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, stdout, &stderr), cio.WithFIFODir(c.FifoDir)))
			if err != nil {
				t.Fatal(err)
			}
			fifo := task.IO().Config().Stdout
			exitc, err := task.Wait(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := task.Start(ctx); err != nil {
				t.Fatal(err)
			}
			<-stdout.entered
			st := <-exitc
			if code, _, err := st.Result(); err != nil || code != 0 {
				t.Fatalf("exit %d, %v", code, err)
			}
			if tc.waitIO {
				close(stdout.gate)
				task.IO().Wait()
			}
			deleted := make(chan error, 1)
			go func() {
				_, err := task.Delete(context.WithoutCancel(ctx))
				deleted <- err
			}()
			if !tc.waitIO {
				// Let the copy goroutine go on only once Delete has
				// closed its FIFO, as a late goroutine would find it.
				tick := time.NewTicker(time.Millisecond)
				for fifoOpen(t, fifo) {
					select {
					case err := <-deleted:
						t.Fatalf("Delete returned (%v) with the FIFO still open", err)
					case <-tick.C:
					}
				}
				tick.Stop()
				close(stdout.gate)
			}
			if err := <-deleted; err != nil {
				t.Fatal(err)
			}
			out := stdout.String()
			if !strings.HasPrefix(out, "first\n") {
				t.Fatalf("stdout %q: the first line is missing", out)
			}
			if got := strings.Contains(out, "second\n"); got != tc.wantSecond {
				t.Fatalf("stdout %q: second line there = %v, want %v", out, got, tc.wantSecond)
			}
			t.Logf("stdout %q", out)
		})
	}
}
