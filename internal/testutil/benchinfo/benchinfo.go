package benchinfo

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
)

// Machine describes the machine now: "2 CPUs, GOMAXPROCS 2, loadavg 0.52
// 0.61 0.70 1/345 6789" (the fields of /proc/loadavg; "loadavg n/a" where
// there is none, as on Windows).
func Machine() string {
	load := "n/a"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%d CPUs, GOMAXPROCS %d, loadavg %s", runtime.NumCPU(), runtime.GOMAXPROCS(0), load)
}

// Print prints "machine: <name> n=<N>: <Machine()>" on stdout, where the
// benchmark reports its figures. Printed, not logged: the testing package
// cuts a benchmark's log to its first lines and shows it only with -v.
//
// The testing package first calls every benchmark with b.N = 1 to size the
// run; that probe prints nothing unless -benchtime is 1x (when it is the
// run). A benchmark sized by time is called again with growing N: each
// call prints, and the last line before the result line is the one that
// applies to it.
func Print(b *testing.B) {
	if b.N == 1 && !oneShot() {
		return
	}
	fmt.Printf("machine: %s n=%d: %s\n", b.Name(), b.N, Machine())
}

// oneShot tells whether -test.benchtime asks for a single iteration.
func oneShot() bool {
	f := flag.Lookup("test.benchtime")
	return f == nil || f.Value.String() == "1x"
}
