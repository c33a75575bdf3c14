package daemon

import (
	"bytes"
	"log/slog"
)

// ServiceName is the name the agent runs under as a Windows service
// (`lockbox agent install-service`), and the source of its event log
// entries.
const ServiceName = "lockbox-agent"

// eventLevel is the level of one line of the agent's log (slog's text or
// JSON form), for the event log's entry type. slog writes the level right
// after the time, before the message and attributes: the first level key
// is the line's, whatever the message says.
func eventLevel(line []byte) slog.Level {
	const textKey, jsonKey = "level=", `"level":"`
	ti, ji := bytes.Index(line, []byte(textKey)), bytes.Index(line, []byte(jsonKey))
	var value []byte
	switch {
	case ji >= 0 && (ti < 0 || ji < ti):
		value = line[ji+len(jsonKey):]
		if j := bytes.IndexByte(value, '"'); j >= 0 {
			value = value[:j]
		}
	case ti >= 0:
		value = line[ti+len(textKey):]
		if j := bytes.IndexAny(value, " \n"); j >= 0 {
			value = value[:j]
		}
	}
	var lv slog.Level
	if value == nil || lv.UnmarshalText(value) != nil {
		return slog.LevelInfo
	}
	return lv
}
