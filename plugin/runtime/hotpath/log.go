package hotpath

import (
	"encoding/json"
	"errors"
	"strconv"
	"time"
)

// formatLog renders one log line the way runc's logrus setup does, so the
// line reads like runc's own: "json" is what containerd's shim asks for and
// parses; anything else gets logrus's text format.
func formatLog(format, level, msg string, now time.Time) []byte {
	ts := now.UTC().Format(time.RFC3339Nano)
	if format == "json" {
		b, _ := json.Marshal(struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
			Time  string `json:"time"`
		}{level, msg, ts})
		return append(b, '\n')
	}
	return []byte("time=" + strconv.Quote(ts) + " level=" + level + " msg=" + strconv.Quote(msg) + "\n")
}

// runcState is the part of "runc state" output the wrapper reads.
type runcState struct {
	Pid int `json:"pid"`
}

func parseStatePid(out []byte) (int, error) {
	var s runcState
	if err := json.Unmarshal(out, &s); err != nil {
		return 0, err
	}
	if s.Pid <= 0 {
		return 0, errNoPid
	}
	return s.Pid, nil
}

var errNoPid = errors.New("runc state: container has no pid")
