//go:build !windows

package daemon

import (
	"context"
	"errors"
	"io"
)

var errWindowsOnly = errors.New("the agent runs as a service of the service control manager on Windows only (elsewhere, run it under systemd: contrib/systemd)")

// IsService is false off Windows.
func IsService() (bool, error) { return false, nil }

// RunService fails off Windows.
func RunService(string, func(ctx context.Context) error) error { return errWindowsOnly }

// EventLogWriter fails off Windows.
func EventLogWriter(string) (io.WriteCloser, error) { return nil, errWindowsOnly }

// InstallService fails off Windows.
func InstallService(string, string, []string) error { return errWindowsOnly }

// UninstallService fails off Windows.
func UninstallService(string) error { return errWindowsOnly }
