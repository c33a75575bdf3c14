package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestLogFlagsRefuseBadValues(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"manager", "--data-dir", "/nonexistent", "--log-format", "xml"}, `--log-format "xml": want text or json`},
		{[]string{"manager", "--data-dir", "/nonexistent", "--log-level", "loud"}, `--log-level "loud": want debug, info, warn or error`},
		{[]string{"agent", "--log-format", "logfmt"}, `--log-format "logfmt": want text or json`},
		{[]string{"agent", "--log-level", "trace"}, `--log-level "trace": want debug, info, warn or error`},
	} {
		root := newRootCommand()
		root.SetOut(&bytes.Buffer{})
		root.SetErr(&bytes.Buffer{})
		root.SetArgs(c.args)
		if err := root.Execute(); err == nil || err.Error() != c.want {
			t.Errorf("lockbox %s: err = %v, want %q", strings.Join(c.args, " "), err, c.want)
		}
	}
}

func TestLogFlagsLevels(t *testing.T) {
	for _, c := range []struct {
		l     logFlags
		debug bool // debug lines written
		info  bool
		warn  bool
	}{
		{logFlags{format: "text", level: "info"}, false, true, true},
		{logFlags{format: "text", level: "warn"}, false, false, true},
		{logFlags{format: "json", level: "DEBUG"}, true, true, true},
		{logFlags{format: "json", level: "error", debug: true}, true, true, true},
	} {
		var b bytes.Buffer
		log, err := c.l.logger(&b)
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
