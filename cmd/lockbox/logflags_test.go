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
