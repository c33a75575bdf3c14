//go:build integration && linux

package integration

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/integration/harness"
	"github.com/lockbox-project/lockbox/plugin/nri"
)

// criScenarios runs the claims every CRI path must honour: a claiming
// container reads its secrets with the right owners and modes, a read-only
// one too, a non-claiming one sees nothing, and claiming an ungranted
// service fails the start with the service's name.
func criScenarios(t *testing.T, r *harness.CRI, a *harness.TestAgent, handler string, claimVia string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	claim := func(svc string) (pod, ctr map[string]string) {
		m := map[string]string{"lockbox.service": svc}
		if claimVia == "pod" {
			return m, nil
		}
		return nil, m
	}

	podAnn, ctrAnn := claim("web")
	pod, err := r.RunPod(ctx, claimVia+"-claiming", handler, podAnn)
	if err != nil {
		t.Fatal(err)
	}
	out, code, err := r.RunContainer(ctx, pod, "app", busybox, harness.ContainerOptions{Annotations: ctrAnn}, "sh", "-c", inspectScript)
	if err != nil || code != 0 {
		t.Fatalf("claiming container: exit %d, %v\n%s", code, err, out)
	}
	checkInspect(t, out)

	podAnn, ctrAnn = claim("ro")
	roPod, err := r.RunPod(ctx, claimVia+"-readonly", handler, podAnn)
	if err != nil {
		t.Fatal(err)
	}
	out, code, err = r.RunContainer(ctx, roPod, "ro", busybox, harness.ContainerOptions{Annotations: ctrAnn, ReadonlyRootfs: true}, "sh", "-c", "cat /run/secrets/db_pw; touch /x 2>&1; true")
	if err != nil || code != 0 || !strings.Contains(out, "hunter2-db") || !strings.Contains(out, "Read-only") {
		t.Fatalf("read-only claiming container: exit %d, %v\n%s", code, err, out)
	}

	plainPod, err := r.RunPod(ctx, claimVia+"-plain", handler, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, _, err = r.RunContainer(ctx, plainPod, "plain", busybox, harness.ContainerOptions{}, "sh", "-c", "ls /run/secrets 2>&1; true")
	if err != nil || !strings.Contains(out, "No such file") {
		t.Fatalf("non-claiming container: %v\n%s", err, out)
	}

	podAnn, ctrAnn = claim("other")
	deniedPod, err := r.RunPod(ctx, claimVia+"-denied", handler, podAnn)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = r.RunContainer(ctx, deniedPod, "denied", busybox, harness.ContainerOptions{Annotations: ctrAnn}, "true")
	if err == nil || !strings.Contains(err.Error(), `"other"`) {
		t.Fatalf("claiming an ungranted service: err = %v, want a failed start naming the service", err)
	}

	if held := a.Held(); len(held) != 0 {
		t.Errorf("agent holds %v after every container was removed", held)
	}
}

func TestCRIWithNRIPlugin(t *testing.T) {
	a := harness.StartTestAgent(t, testGrants, testSecrets)
	c := harness.StartContainerd(t, harness.Options{CRI: true, NRI: true, NRIRequired: []string{"lockbox"}})
	c.Import("k8s.io", harness.ImageConfig{Name: busybox})
	r := c.CRI()

	// Fail closed: with the plugin required and not connected, no container
	// is created at all.
	{
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		pod, err := r.RunPod(ctx, "early", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = r.RunContainer(ctx, pod, "early", busybox, harness.ContainerOptions{Annotations: map[string]string{"lockbox.service": "web"}}, "true")
		cancel()
		if err == nil || !strings.Contains(err.Error(), "lockbox") {
			t.Fatalf("container created without the required lockbox NRI plugin: %v", err)
		}
	}

	p := nri.New(a)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, nri.Options{Socket: c.NRISocket}) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-p.Synced():
	case err := <-done:
		t.Fatalf("nri plugin stopped before registering: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("nri plugin did not register in 30s")
	}
	for _, via := range []string{"container", "pod"} {
		t.Run("annotation on "+via, func(t *testing.T) {
			criScenarios(t, r, a, "", via)
		})
	}
}

func TestCRIRuntimeHandler(t *testing.T) {
	bin := harness.LockboxBin(t)
	a := harness.StartTestAgent(t, testGrants, testSecrets)
	c := harness.StartContainerd(t, harness.Options{CRI: true, RuntimeBinary: filepath.Join(bin, "lockbox-runtime"),
		Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
	c.Import("k8s.io", harness.ImageConfig{Name: busybox})
	r := c.CRI()
	for _, via := range []string{"container", "pod"} {
		t.Run("annotation on "+via, func(t *testing.T) {
			criScenarios(t, r, a, "lockbox", via)
		})
	}
}
