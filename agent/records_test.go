package agent

import "testing"

// TestJudge covers what a Prepare of a held container ID does, from what
// the agent knows of the holder and of the caller.
func TestJudge(t *testing.T) {
	proc := identity{Pid: 100, PidStart: 5000, MntNS: 40}
	tests := []struct {
		name      string
		held      identity
		heldAlive bool
		req       identity
		want      verdict
	}{
		{"same process asks again", proc, true, proc, sameContainer},
		{"holder ended, new container reuses the ID", proc, false, identity{Pid: 200, PidStart: 6000, MntNS: 41}, replaceEnded},
		{"holder ended, same pid reused by a new process", proc, false, identity{Pid: 100, PidStart: 7000, MntNS: 41}, replaceEnded},
		{"holder lives, another container (other namespace, e.g. another containerd namespace) takes the ID", proc, true, identity{Pid: 200, PidStart: 6000, MntNS: 41}, refuseInUse},
		{"holder lives, its pid with another start time", proc, true, identity{Pid: 100, PidStart: 5001, MntNS: 40}, refuseInUse},
		{"holder lives, caller knows only the holder's namespace (old hook)", proc, true, identity{MntNS: 40}, sameContainer},
		{"holder lives, caller knows only another namespace", proc, true, identity{MntNS: 41}, refuseInUse},
		{"holder lives, caller unidentified", proc, true, identity{}, refuseInUse},
		{"namespace-only holder lives, same namespace", identity{MntNS: 40}, true, identity{MntNS: 40}, sameContainer},
		{"namespace-only holder lives, a process in its namespace", identity{MntNS: 40}, true, proc, sameContainer},
		{"namespace-only holder lives, another namespace", identity{MntNS: 40}, true, identity{Pid: 9, PidStart: 1, MntNS: 41}, refuseInUse},
		{"namespace-only holder ended", identity{MntNS: 40}, false, identity{MntNS: 40}, replaceEnded},
		{"unidentified holder, unidentified caller", identity{}, false, identity{}, sameContainer},
		{"unidentified holder cannot be found ended", identity{}, false, proc, refuseInUse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := judge(tt.held, tt.heldAlive, tt.req); got != tt.want {
				t.Errorf("judge(%+v, alive=%v, %+v) = %v, want %v", tt.held, tt.heldAlive, tt.req, got, tt.want)
			}
		})
	}
}

func TestIdentitySameIsSymmetric(t *testing.T) {
	ids := []identity{{}, {Pid: 1, PidStart: 2}, {Pid: 1, PidStart: 3}, {MntNS: 7}, {Pid: 1, PidStart: 2, MntNS: 7}, {Pid: 4, PidStart: 2, MntNS: 7}, {MntNS: 8}}
	for _, a := range ids {
		if !a.same(a) {
			t.Errorf("%+v is not the same as itself", a)
		}
		for _, b := range ids {
			if a.same(b) != b.same(a) {
				t.Errorf("same(%+v, %+v) = %v but the other way round %v", a, b, a.same(b), b.same(a))
			}
		}
	}
}
