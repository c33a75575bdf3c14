package agent

import (
	"bufio"
	"os/exec"
	"strconv"
	"testing"
)

// TestLiveness covers the two ways a record names its container: a pid
// with its start time, and a mount namespace (for callers that attach
// themselves, like an OCI hook, and give no pid).
func TestLiveness(t *testing.T) {
	// The shell says "ready" from inside the new namespace, then becomes
	// sleep in it.
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", "echo ready; exec sleep 600")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("child said %q: %v", line, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	pid := cmd.Process.Pid
	start, err := pidStart(pid)
	if err != nil {
		t.Fatal(err)
	}
	self, err := mntNS("self")
	if err != nil {
		t.Fatal(err)
	}
	ns, err := mntNS(strconv.Itoa(pid))
	if err != nil {
		t.Fatal(err)
	}
	if ns == self || ns == 0 {
		t.Fatal("child never entered a new mount namespace")
	}

	tests := []struct {
		name string
		rec  record
		want bool
	}{
		{"pid and start time", record{Pid: pid, PidStart: start}, true},
		{"pid reused (start time differs)", record{Pid: pid, PidStart: start + 1}, false},
		{"mount namespace", record{MntNS: ns}, true},
		{"unknown namespace", record{MntNS: ns + 1<<40}, false},
		{"nothing to go by", record{}, false},
	}
	live := liveNamespaces()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, got := tt.rec.alive(live); got != tt.want {
				t.Errorf("alive = %v, want %v", got, tt.want)
			}
		})
	}

	cmd.Process.Kill()
	<-exited
	live = liveNamespaces()
	for _, rec := range []record{{Pid: pid, PidStart: start}, {MntNS: ns}} {
		if _, ok := rec.alive(live); ok {
			t.Errorf("record %+v alive after the process ended", rec)
		}
	}
}
