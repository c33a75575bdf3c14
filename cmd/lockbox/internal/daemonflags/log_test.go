package daemonflags

import (
	"bytes"
	"strings"
	"testing"
)

func TestLogFlagsLevels(t *testing.T) {
	for _, c := range []struct {
		l     Log
		debug bool // debug lines written
		info  bool
		warn  bool
	}{
		{Log{format: "text", level: "info"}, false, true, true},
		{Log{format: "text", level: "warn"}, false, false, true},
		{Log{format: "json", level: "DEBUG"}, true, true, true},
		{Log{format: "json", level: "error", debug: true}, true, true, true},
	} {
		var b bytes.Buffer
		log, err := c.l.Logger(&b)
		if err != nil {
			t.Fatal(err)
		}
		log.Debug("d")
		log.Info("i")
		log.Warn("w")
		out := b.String()
		if got := strings.Contains(out, "msg=d") || strings.Contains(out, `"msg":"d"`); got != c.debug {
			t.Errorf("%+v: debug written = %v", c.l, got)
		}
		if got := strings.Contains(out, "msg=i") || strings.Contains(out, `"msg":"i"`); got != c.info {
			t.Errorf("%+v: info written = %v", c.l, got)
		}
		if got := strings.Contains(out, "msg=w") || strings.Contains(out, `"msg":"w"`); got != c.warn {
			t.Errorf("%+v: warn written = %v", c.l, got)
		}
	}
}
