package daemon

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"testing"
)

const reexecChildEnv = "LOCKBOX_DAEMON_TEST_REEXEC_CHILD"

// runReexecChild is the child of TestReexec (see TestMain): it
// re-executes itself the way the agent does and reports the GODEBUG the
// runtime ended up with.
func runReexecChild() int {
	os.Stdout.WriteString("start\n")
	if err := Reexec(); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 1
	}
	n := 0
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GODEBUG=") {
			n++
		}
	}
	os.Stdout.WriteString("done " + os.Getenv("GODEBUG") + " entries=" + strings.Repeat("x", n) + "\n")
	return 0
}

// TestReexec: the agent re-executes itself once with clobberfree=1 and
// asyncpreemptoff=1 in GODEBUG, whatever GODEBUG the operator set, and
// keeps the operator's settings.
func TestReexec(t *testing.T) {
	tests := []struct {
		name, godebug, want string
	}{
		{"unset", "", "clobberfree=1,asyncpreemptoff=1"},
		{"operator's setting", "madvdontneed=1", "madvdontneed=1,clobberfree=1,asyncpreemptoff=1"},
		{"one there", "clobberfree=1", "clobberfree=1,asyncpreemptoff=1"},
		{"both there", "asyncpreemptoff=1,clobberfree=1", "asyncpreemptoff=1,clobberfree=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			env := []string{reexecChildEnv + "=1"}
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "GODEBUG=") {
					env = append(env, kv)
				}
			}
			if tt.godebug != "" {
				env = append(env, "GODEBUG="+tt.godebug)
			}
			cmd.Env = env
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cmd.Process.Kill(); cmd.Wait() }()
			sc := bufio.NewScanner(out)
			starts := 0
			for sc.Scan() {
				line := sc.Text()
				if line == "start" {
					// Once before the re-exec, once after it.
					if starts++; starts > 2 {
						t.Fatalf("the process re-executed itself %d times and counting", starts-1)
					}
					continue
				}
				if rest, ok := strings.CutPrefix(line, "done "); ok {
					if want := tt.want + " entries=x"; rest != want {
						t.Errorf("after the re-exec: %q, want %q (one GODEBUG entry)", rest, want)
					}
					return
				}
			}
			t.Fatalf("the child ended without reporting (%v)", sc.Err())
		})
	}
}
