package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// logFlags are the daemons' logging flags: --log-format text|json,
// --log-level, and --debug (kept: it means --log-level debug).
type logFlags struct {
	format string
	level  string
	debug  bool
}

func (l *logFlags) add(f *pflag.FlagSet) {
	f.StringVar(&l.format, "log-format", "text", "log format: text (key=value) or json (one object a line: time, level, msg, then attributes)")
	f.StringVar(&l.level, "log-level", "info", "lowest level logged: debug, info, warn or error")
	f.BoolVar(&l.debug, "debug", false, "log at debug level (same as --log-level debug)")
}

// check validates the flags, before the daemon does anything else.
func (l *logFlags) check() error {
	_, err := l.parse()
	return err
}

func (l *logFlags) parse() (slog.Level, error) {
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

// logger builds the daemon's logger on w.
func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	lv, err := l.parse()
	if err != nil {
		return nil, err
	}
	o := &slog.HandlerOptions{Level: lv}
	if l.format == "json" {
		return slog.New(slog.NewJSONHandler(w, o)), nil
	}
	return slog.New(slog.NewTextHandler(w, o)), nil
}

// etcdLogger is the embedded etcd member's zap logger, in the same format
// and with slog's key names (time, level, msg), so that one parser reads
// the manager's whole log. etcd logs at error level and above only: its
// info lines are many and for etcd's developers; --log-level debug lowers
// that to warn.
func (l *logFlags) etcdLogger(w io.Writer) (*zap.Logger, error) {
	lv, err := l.parse()
	if err != nil {
		return nil, err
	}
	zl := zapcore.ErrorLevel
	if lv <= slog.LevelDebug {
		zl = zapcore.WarnLevel
	}
	ec := zapcore.EncoderConfig{
		TimeKey: "time", LevelKey: "level", NameKey: "logger", MessageKey: "msg",
		StacktraceKey: "", LineEnding: zapcore.DefaultLineEnding,
		EncodeLevel: zapcore.CapitalLevelEncoder, EncodeTime: zapcore.RFC3339NanoTimeEncoder,
		EncodeDuration: zapcore.StringDurationEncoder,
	}
	var enc zapcore.Encoder
	if l.format == "json" {
		enc = zapcore.NewJSONEncoder(ec)
	} else {
		ec.ConsoleSeparator = " "
		enc = zapcore.NewConsoleEncoder(ec)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), zl)
	return zap.New(core).With(zap.String("part", "etcd")), nil
}
