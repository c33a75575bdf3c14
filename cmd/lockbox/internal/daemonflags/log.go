// Package daemonflags holds the command-line flags that lockbox's daemons,
// the manager and the agent, share: how they log and how they take a join
// token. Both the full lockbox build and its node build (cmd/lockbox/node)
// link it, so it links neither the manager nor etcd.
package daemonflags

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/pflag"
)

// Log is the daemons' logging flags: --log-format text|json, --log-level,
// and --debug (kept: it means --log-level debug).
type Log struct {
	format string
	level  string
	debug  bool
}

// Add declares the flags on f.
func (l *Log) Add(f *pflag.FlagSet) {
	f.StringVar(&l.format, "log-format", "text", "log format: text (key=value) or json (one object a line: time, level, msg, then attributes)")
	f.StringVar(&l.level, "log-level", "info", "lowest level logged: debug, info, warn or error")
	f.BoolVar(&l.debug, "debug", false, "log at debug level (same as --log-level debug)")
}

// Check validates the flags, before the daemon does anything else.
func (l *Log) Check() error {
	_, err := l.Level()
	return err
}

// JSON reports whether --log-format is json.
func (l *Log) JSON() bool { return l.format == "json" }

// Level is the lowest level the flags ask to log.
func (l *Log) Level() (slog.Level, error) {
	switch l.format {
	case "text", "json":
	default:
		return 0, fmt.Errorf("--log-format %q: want text or json", l.format)
	}
	var lv slog.Level
	switch strings.ToLower(l.level) {
	case "debug":
		lv = slog.LevelDebug
	case "info":
		lv = slog.LevelInfo
	case "warn", "warning":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", l.level)
	}
	if l.debug {
		lv = slog.LevelDebug
	}
	return lv, nil
}

// Logger builds the daemon's logger on w.
func (l *Log) Logger(w io.Writer) (*slog.Logger, error) {
	lv, err := l.Level()
	if err != nil {
		return nil, err
	}
	o := &slog.HandlerOptions{Level: lv}
	if l.JSON() {
		return slog.New(slog.NewJSONHandler(w, o)), nil
	}
	return slog.New(slog.NewTextHandler(w, o)), nil
}
