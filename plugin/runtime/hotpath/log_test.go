package hotpath

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestFormatLog(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	msg := `lockbox: container c1 claims service "web": agent: NOT_GRANTED`
	var line struct{ Level, Msg, Time string }
	if err := json.Unmarshal(formatLog("json", "error", msg, now), &line); err != nil {
		t.Fatal(err)
	}
	if line.Level != "error" || line.Msg != msg || line.Time != "2026-01-02T03:04:05.000000006Z" {
		t.Errorf("json line = %+v", line)
	}
	text := string(formatLog("text", "warning", msg, now))
	if !strings.HasPrefix(text, `time="2026-01-02T03:04:05.000000006Z" level=warning msg="lockbox: container c1 claims service \"web\"`) || !strings.HasSuffix(text, "\n") {
		t.Errorf("text line = %q", text)
	}
}

func TestParseStatePid(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{`{"ociVersion":"1.0.2","id":"c1","pid":4242,"status":"created"}`, 4242, true},
		{`{"id":"c1","pid":0,"status":"stopped"}`, 0, false},
		{`not json`, 0, false},
	} {
		got, err := parseStatePid([]byte(tc.in))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseStatePid(%s) = %d, %v", tc.in, got, err)
		}
	}
}
