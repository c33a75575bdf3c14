//go:build integration && linux

package integration

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/lockbox-project/lockbox/integration/harness"
)

// The real agent binary (cgo, as shipped) sets a millisecond of timer
// slack on the Go runtime's system monitor thread, the first thread after
// its main one (internal/sysmon, whose tests hold that choice to sysmon's
// behaviour), and on no other thread.
func TestAgentRelaxesSysmon(t *testing.T) {
	bin := harness.LockboxBin(t)
	m := harness.StartManager(t, bin)
	a := harness.StartAgent(t, bin, m)
	pid := a.Pid()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		t.Fatal(err)
	}
	var tids []int
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil && tid != pid {
			tids = append(tids, tid)
		}
	}
	slices.Sort(tids)
	if len(tids) == 0 || tids[0] < pid {
		t.Fatalf("agent %d: threads %v: no thread after the main one, or the ID counter wrapped", pid, tids)
	}
	for i, tid := range tids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/timerslack_ns")
		if err != nil {
			t.Fatal(err)
		}
		slack := strings.TrimSpace(string(b))
		switch {
		case i == 0 && slack != "1000000":
			t.Errorf("agent %d: sysmon's thread %d has a timer slack of %s ns, want 1000000", pid, tid, slack)
		case i > 0 && slack == "1000000":
			t.Errorf("agent %d: thread %d, not sysmon's, has sysmon's timer slack", pid, tid)
		}
	}
}
