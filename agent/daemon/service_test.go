package daemon

import (
	"bytes"
	"log/slog"
	"testing"
)

// Each line the agent logs reaches the event log with its own level, in
// either log format.
func TestEventLevel(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		for _, lv := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError} {
			var b bytes.Buffer
			o := &slog.HandlerOptions{Level: slog.LevelDebug}
			h := slog.Handler(slog.NewTextHandler(&b, o))
			if format == "json" {
				h = slog.NewJSONHandler(&b, o)
			}
			// A message that names another level must not fool it.
			slog.New(h).Log(t.Context(), lv, "peer said level=ERROR", "detail", "level=WARN")
			if got := eventLevel(b.Bytes()); got != lv {
				t.Errorf("%s line %q: level %v, want %v", format, b.String(), got, lv)
			}
		}
	}
	if got := eventLevel([]byte("no level at all")); got != slog.LevelInfo {
		t.Errorf("line without a level: %v, want INFO", got)
	}
}
