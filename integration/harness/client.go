//go:build linux

package harness

import (
	"bytes"
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
)

// Client connects the containerd Go client to c, in namespace ns. The
// connection is closed when the test ends.
func (c *Containerd) Client(ns string) (*containerd.Client, context.Context) {
	c.t.Helper()
	cl, err := containerd.New(c.Address, containerd.WithDefaultNamespace(ns))
	if err != nil {
		c.t.Fatalf("containerd client: %v", err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl, namespaces.WithNamespace(context.Background(), ns)
}

// outputGrace bounds how long GoRun waits, after a container's exit, for
// its output to finish arriving.
const outputGrace = 30 * time.Second

// GoRun creates, starts and waits for a container with the Go client, then
// deletes it and its snapshot, like "ctr run --rm". runtimeBinary is the
// runc shim's BinaryName. It returns the container's stdout followed by its
// stderr, and its exit status.
func (c *Containerd) GoRun(ctx context.Context, cl *containerd.Client, image, id, runtimeBinary string, opts ...oci.SpecOpts) (string, uint32, error) {
	return c.GoRunRuntime(ctx, cl, image, id, "io.containerd.runc.v2", &options.Options{BinaryName: runtimeBinary, Root: c.RuncRoot}, opts...)
}

// GoRunRuntime is GoRun under runtime type runtime (for instance
// io.containerd.lockbox.v2) with runtimeOpts as its options (nil: none).
func (c *Containerd) GoRunRuntime(ctx context.Context, cl *containerd.Client, image, id, runtime string, runtimeOpts any, opts ...oci.SpecOpts) (string, uint32, error) {
	img, err := cl.GetImage(ctx, image)
	if err != nil {
		return "", 0, fmt.Errorf("image %s: %w", image, err)
	}
	ctr, err := cl.NewContainer(ctx, id,
		containerd.WithNewSnapshot(id, img),
		containerd.WithRuntime(runtime, runtimeOpts),
		containerd.WithNewSpec(append([]oci.SpecOpts{oci.WithImageConfig(img)}, opts...)...),
	)
	if err != nil {
		return "", 0, fmt.Errorf("new container %s: %w", id, err)
	}
	defer ctr.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup)
	// Separate buffers: the two streams are copied by separate goroutines.
	var stdout, stderr bytes.Buffer
	output := func() string { return stdout.String() + stderr.String() }
	task, err := ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &stdout, &stderr), cio.WithFIFODir(c.FifoDir)))
	if err != nil {
		return "", 0, fmt.Errorf("new task %s: %w", id, err)
	}
	defer task.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
	exitc, err := task.Wait(ctx)
	if err != nil {
		return "", 0, fmt.Errorf("wait %s: %w", id, err)
	}
	if err := task.Start(ctx); err != nil {
		return "", 0, fmt.Errorf("start %s: %w", id, err)
	}
	var st containerd.ExitStatus
	select {
	case st = <-exitc:
	case <-ctx.Done():
		task.Kill(context.WithoutCancel(ctx), syscall.SIGKILL)
		return "", 0, ctx.Err()
	}
	code, _, err := st.Result()
	if err != nil {
		return "", 0, err
	}
	// Wait for the copy of the output first: containerd's Task.Delete
	// closes the client's FIFOs before it waits for them (cio's Cancel,
	// containerd 2.4.2), dropping whatever the copy goroutines had not read
	// yet, and a loaded machine sees that about once in a thousand runs
	// (TestClientDeleteDropsUnreadOutput). The copies end when the shim has
	// passed on everything the container wrote: its process has exited.
	ioDone := make(chan struct{})
	go func() {
		task.IO().Wait()
		close(ioDone)
	}()
	select {
	case <-ioDone:
	case <-ctx.Done():
		return "", code, fmt.Errorf("output of %s: %w", id, ctx.Err())
	case <-time.After(outputGrace):
		// Something outside the container's pid namespace holds its stdout
		// or stderr open: a bug to report, not to wait out.
		return "", code, fmt.Errorf("output of %s still open %v after its exit", id, outputGrace)
	}
	if _, err := task.Delete(ctx); err != nil {
		return "", code, fmt.Errorf("delete task %s: %w", id, err)
	}
	return output(), code, nil
}
