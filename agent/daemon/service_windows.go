package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/eventlog"
	"golang.org/x/sys/windows/svc/mgr"
)

// IsService reports whether the service control manager started this
// process.
func IsService() (bool, error) { return svc.IsWindowsService() }

// stopTimeout is how long the agent may take to stop once the SCM asks
// (its wait hint): Run closes the local API and the session.
const stopTimeout = 30 * time.Second

// failedExitCode is the service-specific exit code of an agent whose Run
// failed: a non-zero code with recovery actions on non-crash failures
// (InstallService) has the SCM restart it.
const failedExitCode = 1

// RunService runs run under the SCM as service name: it reports the
// service running, cancels run's context on Stop or Shutdown, and reports
// it stopped when run returns. It returns once the SCM has let go.
func RunService(name string, run func(ctx context.Context) error) error {
	h := &serviceHandler{run: run}
	if err := svc.Run(name, h); err != nil {
		return err
	}
	return h.err
}

type serviceHandler struct {
	run func(ctx context.Context) error
	// err is what run returned.
	err error
}

// Execute is svc.Handler's: the service's life between the SCM's start
// and its stop.
func (h *serviceHandler) Execute(_ []string, req <-chan svc.ChangeRequest, status chan<- svc.Status) (bool, uint32) {
	const accepts = svc.AcceptStop | svc.AcceptShutdown
	status <- svc.Status{State: svc.StartPending}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.run(ctx) }()
	status <- svc.Status{State: svc.Running, Accepts: accepts}
	for {
		select {
		case err := <-done:
			// Run ended by itself: a failure the SCM's recovery actions
			// answer, or a clean end.
			h.err = err
			if err != nil {
				return true, failedExitCode
			}
			return false, 0
		case c := <-req:
			switch c.Cmd {
			case svc.Interrogate:
				status <- c.CurrentStatus
			case svc.Stop, svc.Shutdown:
				status <- svc.Status{State: svc.StopPending, WaitHint: uint32(stopTimeout / time.Millisecond)}
				cancel()
				select {
				case h.err = <-done:
				case <-time.After(stopTimeout):
					h.err = errors.New("the agent did not stop in time")
				}
				if h.err != nil && !errors.Is(h.err, context.Canceled) {
					return true, failedExitCode
				}
				h.err = nil
				return false, 0
			}
		}
	}
}

// EventLogWriter returns a writer for the agent's logger that writes each
// line to the Windows event log under source name, as an error, a warning
// or information by the line's level (debug lines as information).
func EventLogWriter(name string) (io.WriteCloser, error) {
	l, err := eventlog.Open(name)
	if err != nil {
		return nil, fmt.Errorf("open the event log as %s: %w (run lockbox agent install-service)", name, err)
	}
	return &eventLogWriter{l: l}, nil
}

type eventLogWriter struct{ l *eventlog.Log }

// eventID is the one event ID the agent logs under: the message carries
// everything.
const eventID = 1

func (w *eventLogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimRight(string(p), "\r\n")
	var err error
	switch eventLevel(p) {
	case slog.LevelError:
		err = w.l.Error(eventID, msg)
	case slog.LevelWarn:
		err = w.l.Warning(eventID, msg)
	default:
		err = w.l.Info(eventID, msg)
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *eventLogWriter) Close() error { return w.l.Close() }

// restartDelays are the SCM's recovery actions for the agent: restart
// after each delay in turn (the last repeats), the failure count reset
// after a day without one.
var restartDelays = []time.Duration{5 * time.Second, 10 * time.Second, 30 * time.Second}

const recoveryResetSeconds = 24 * 60 * 60

// InstallService registers exe with args as the automatic-start service
// name, running as LocalSystem (the agent needs Administrators' or
// SYSTEM's rights for its state directory ACLs and its pipe), with
// recovery actions that restart it after a crash or a failed exit, and
// registers name as an event log source.
func InstallService(name, exe string, args []string) error {
	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("connect to the service control manager: %w", err)
	}
	defer m.Disconnect()
	if s, err := m.OpenService(name); err == nil {
		s.Close()
		return fmt.Errorf("service %s already exists (lockbox agent uninstall-service first)", name)
	}
	s, err := m.CreateService(name, exe, mgr.Config{
		DisplayName: "Lockbox agent",
		Description: "Lockbox node agent: serves the secrets of the services placed on this node to their containers.",
		StartType:   mgr.StartAutomatic,
	}, args...)
	if err != nil {
		return fmt.Errorf("create service %s: %w", name, err)
	}
	defer s.Close()
	var actions []mgr.RecoveryAction
	for _, d := range restartDelays {
		actions = append(actions, mgr.RecoveryAction{Type: mgr.ServiceRestart, Delay: d})
	}
	if err := s.SetRecoveryActions(actions, recoveryResetSeconds); err != nil {
		s.Delete()
		return fmt.Errorf("service %s: recovery actions: %w", name, err)
	}
	if err := s.SetRecoveryActionsOnNonCrashFailures(true); err != nil {
		s.Delete()
		return fmt.Errorf("service %s: recovery on failed exits: %w", name, err)
	}
	if err := eventlog.InstallAsEventCreate(name, eventlog.Error|eventlog.Warning|eventlog.Info); err != nil {
		s.Delete()
		return fmt.Errorf("service %s: event log source: %w", name, err)
	}
	return nil
}

// UninstallService stops the service name if it runs, deletes it and its
// event log source.
func UninstallService(name string) error {
	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("connect to the service control manager: %w", err)
	}
	defer m.Disconnect()
	s, err := m.OpenService(name)
	if err != nil {
		return fmt.Errorf("service %s: %w", name, err)
	}
	defer s.Close()
	if st, err := s.Control(svc.Stop); err == nil {
		deadline := time.Now().Add(stopTimeout)
		for st.State != svc.Stopped && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
			if st, err = s.Query(); err != nil {
				break
			}
		}
	} else if !errors.Is(err, windows.ERROR_SERVICE_NOT_ACTIVE) {
		return fmt.Errorf("stop service %s: %w", name, err)
	}
	if err := s.Delete(); err != nil {
		return fmt.Errorf("delete service %s: %w", name, err)
	}
	if err := eventlog.Remove(name); err != nil {
		return fmt.Errorf("service %s: remove its event log source: %w", name, err)
	}
	return nil
}
