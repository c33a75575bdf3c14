package benchinfo

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
)

func TestMachine(t *testing.T) {
	m := Machine()
	for _, want := range []string{
		fmt.Sprintf("%d CPUs", runtime.NumCPU()),
		fmt.Sprintf("GOMAXPROCS %d", runtime.GOMAXPROCS(0)),
		"loadavg ",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("Machine() = %q, lacks %q", m, want)
		}
	}
	// Where the kernel has a load average, the line carries it, not n/a.
	if _, err := os.Stat("/proc/loadavg"); err == nil && strings.Contains(m, "n/a") {
		t.Errorf("Machine() = %q with /proc/loadavg present", m)
	}
}
