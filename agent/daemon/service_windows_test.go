package daemon

import (
	"context"
	"errors"
	"testing"

	"golang.org/x/sys/windows/svc"
)

// The agent under the SCM: running once started, stopped on Stop and
// Shutdown with run's context cancelled, and a failed run reported with
// an exit code the recovery actions act on.
func TestServiceExecute(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cmd      svc.Cmd // 0: none, run ends by itself
		runErr   error
		wantSSEC bool
		wantCode uint32
	}{
		{name: "stop", cmd: svc.Stop},
		{name: "shutdown", cmd: svc.Shutdown},
		{name: "run fails", runErr: errors.New("state dir: access denied"), wantSSEC: true, wantCode: failedExitCode},
		{name: "stop, and run fails stopping", cmd: svc.Stop, runErr: errors.New("close session: broken"), wantSSEC: true, wantCode: failedExitCode},
	} {
		t.Run(tc.name, func(t *testing.T) {
			started := make(chan struct{})
			h := &serviceHandler{run: func(ctx context.Context) error {
				close(started)
				if tc.cmd == 0 {
					return tc.runErr
				}
				<-ctx.Done()
				if tc.runErr != nil {
					return tc.runErr
				}
				return ctx.Err()
			}}
			req := make(chan svc.ChangeRequest)
			status := make(chan svc.Status, 8)
			type result struct {
				ssec bool
				code uint32
			}
			done := make(chan result, 1)
			go func() {
				ssec, code := h.Execute(nil, req, status)
				done <- result{ssec, code}
			}()
			<-started
			if tc.cmd != 0 {
				// Interrogate is answered with the status the SCM holds.
				req <- svc.ChangeRequest{Cmd: svc.Interrogate, CurrentStatus: svc.Status{State: svc.Running, Accepts: svc.AcceptStop | svc.AcceptShutdown}}
				req <- svc.ChangeRequest{Cmd: tc.cmd}
			}
			r := <-done
			if r.ssec != tc.wantSSEC || r.code != tc.wantCode {
				t.Errorf("Execute = %v, %d; want %v, %d", r.ssec, r.code, tc.wantSSEC, tc.wantCode)
			}
			close(status)
			var states []svc.State
			for s := range status {
				states = append(states, s.State)
				if s.State == svc.Running && s.Accepts != svc.AcceptStop|svc.AcceptShutdown {
					t.Errorf("running, accepting %v: want stop and shutdown", s.Accepts)
				}
			}
			want := []svc.State{svc.StartPending, svc.Running}
			if tc.cmd != 0 {
				want = append(want, svc.Running, svc.StopPending)
			}
			if len(states) != len(want) {
				t.Fatalf("states %v, want %v", states, want)
			}
			for i := range want {
				if states[i] != want[i] {
					t.Fatalf("states %v, want %v", states, want)
				}
			}
			if (h.err != nil) != (tc.runErr != nil) {
				t.Errorf("run's error %v, want %v", h.err, tc.runErr)
			}
		})
	}
}
