//go:build !linux

package manager

import "log/slog"

func warnOpenFiles(*slog.Logger) {}
