package procstat

import (
	"errors"
	"os"
	"runtime"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tail := " 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 987654 19 20"
	for _, tc := range []struct {
		name string
		line string
		want Stat
		err  error // nil: must parse; errMalformed or ErrExited otherwise
	}{
		{"plain", "1234 (sleep) S 7" + tail, Stat{PPid: 7, Start: 987654, UTime: 10, STime: 11}, nil},
		{"name with spaces and parentheses", "1234 (a b) c)) S 7" + tail, Stat{PPid: 7, Start: 987654, UTime: 10, STime: 11}, nil},
		{"zombie", "1234 (sleep) Z 7" + tail, Stat{}, ErrExited},
		{"short", "1234 (sleep) S 1 2", Stat{}, errMalformed},
		{"no parenthesis", "no paren", Stat{}, errMalformed},
		{"start not a number", "1 (x) S 7 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 x 19", Stat{}, errMalformed},
		{"utime not a number", "1 (x) S 7 1 2 3 4 5 6 7 8 9 x 11 12 13 14 15 16 17 18 19", Stat{}, errMalformed},
		{"stime negative", "1 (x) S 7 1 2 3 4 5 6 7 8 9 10 -1 12 13 14 15 16 17 18 19", Stat{}, errMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.line)
			if got != tc.want || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Errorf("Parse = %+v, %v; want %+v, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestReadSelf(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
	st, err := Read(os.Getpid())
	if err != nil || st.PPid != os.Getppid() || st.Start == 0 {
		t.Fatalf("Read(self) = %+v, %v; parent %d", st, err, os.Getppid())
	}
	// Work until the CPU ticks grow: they must, within a few ticks of CPU
	// time, however loaded the machine (the deadline is wall time).
	deadline := time.Now().Add(10 * time.Second)
	for {
		for end := time.Now().Add(time.Second / TicksPerSecond); time.Now().Before(end); {
		}
		after, err := Read(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if after.UTime+after.STime > st.UTime+st.STime {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU ticks %d+%d, still %d+%d after 10 s of work", st.UTime, st.STime, after.UTime, after.STime)
		}
	}
}
