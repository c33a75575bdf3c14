package validation

import "testing"

func TestParseSignal(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int // 0: refused
	}{
		{"SIGHUP", 1}, {"HUP", 1}, {"hup", 1}, {"sigusr1", 10}, {"USR2", 12},
		{"1", 1}, {"15", 15}, {"64", 64}, {"SIGRTMIN", 34}, {"RTMIN+3", 37},
		{"SIGRTMAX-1", 63}, {"RTMAX", 64},
		{"", 0}, {"0", 0}, {"65", 0}, {"-1", 0}, {"SIGFOO", 0}, {"RTMIN+31", 0},
		{"RTMIN+-1", 0}, {"KILL", 0}, {"SIGSTOP", 0}, {"9", 0}, {"19", 0},
		{"SIG", 0}, {" HUP", 0},
	} {
		got, err := ParseSignal(tc.in)
		if tc.want == 0 {
			if err == nil {
				t.Errorf("ParseSignal(%q) = %d, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseSignal(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseSignal(f *testing.F) {
	for _, s := range []string{"SIGHUP", "RTMIN+3", "9", "", "RTMAX-30"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSignal(s)
		if err == nil && (n < 1 || n > 64 || n == 9 || n == 19) {
			t.Fatalf("ParseSignal(%q) = %d", s, n)
		}
	})
}
