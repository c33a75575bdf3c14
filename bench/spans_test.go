//go:build linux

package bench

import (
	"bufio"
	"fmt"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// spanLog keeps when each variant's containers ran, in CLOCK_MONOTONIC
// nanoseconds (the clock perf record -k CLOCK_MONOTONIC stamps its samples
// with), for bench/cpuattr: LOCKBOX_BENCH_SPANS names the file, written
// when the run ends, one line "variant start end" per container, the
// variants in the benchmark's order (the baseline first). Warm-up rounds
// are left out. A nil spanLog (the variable unset) records nothing.
type spanLog struct {
	path  string
	spans [][][2]int64
}

func newSpanLog(variants int) *spanLog {
	p := os.Getenv("LOCKBOX_BENCH_SPANS")
	if p == "" {
		return nil
	}
	return &spanLog{path: p, spans: make([][][2]int64, variants)}
}

// measure runs run and records its span as variant v's.
func (l *spanLog) measure(v, round int, run func() time.Duration) time.Duration {
	if l == nil || round == warmupRound {
		return run()
	}
	start := monotonicNow()
	d := run()
	l.spans[v] = append(l.spans[v], [2]int64{start, monotonicNow()})
	return d
}

// write writes the spans to the file, named by variant.
func (l *spanLog) write(b *testing.B, names []string) {
	if l == nil {
		return
	}
	f, err := os.Create(l.path)
	if err != nil {
		b.Fatalf("LOCKBOX_BENCH_SPANS: %v", err)
	}
	w := bufio.NewWriter(f)
	for v, spans := range l.spans {
		for _, s := range spans {
			fmt.Fprintf(w, "%s %d %d\n", names[v], s[0], s[1])
		}
	}
	if err := w.Flush(); err != nil {
		b.Fatalf("LOCKBOX_BENCH_SPANS: %v", err)
	}
	if err := f.Close(); err != nil {
		b.Fatalf("LOCKBOX_BENCH_SPANS: %v", err)
	}
}

// monotonicNow is CLOCK_MONOTONIC in nanoseconds (Go's time.Now keeps its
// monotonic reading private).
func monotonicNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err)
	}
	return ts.Nano()
}
