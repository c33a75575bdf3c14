package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// runManagerCLI runs "lockbox manager" as the binary would, until the
// returned stop is called, and waits for it to log that it is ready.
func runManagerCLI(t *testing.T, dataDir string, extra ...string) (host string, log *logSink, stop func()) {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "manager.sock")
	addr := "127.0.0.1:" + freeTCPPort(t, "127.0.0.1")
	args := append([]string{"manager", "--data-dir", dataDir, "--listen", addr, "--admin-socket", sock,
		"--etcd-peer-port", freeTCPPort(t, "127.0.0.1")}, extra...)
	log = newLogSink("manager ready")
	root := newRootCommand()
	root.SetOut(&bytes.Buffer{})
	root.SetErr(log)
	root.SetArgs(args)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	select {
	case <-log.found:
	case err := <-done:
		cancel()
		t.Fatalf("lockbox %s: %v\n%s", strings.Join(args, " "), err, log)
	case <-time.After(90 * time.Second):
		cancel()
		t.Fatalf("manager not ready after 90s:\n%s", log)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("manager: %v", err)
				}
			case <-time.After(60 * time.Second):
				t.Error("manager did not stop in 60s")
			}
		})
	}
	t.Cleanup(stop)
	return "unix://" + sock, log, stop
}

// The manager's --log-format json log is JSON lines, each with time, level
// and msg, at debug level too, and never carries a secret's bytes, in
// clear or base64, though a secret is created, listed and inspected while
// it runs.
func TestManagerJSONLog(t *testing.T) {
	host, log, stop := runManagerCLI(t, filepath.Join(t.TempDir(), "data"), "--log-format", "json", "--log-level", "debug")
	const canary = "canary-4f1b9e-secret-bytes"
	e := &cliEnv{host: host}
	e.mustRun(t, canary, "secret", "create", "db_pw", "-")
	e.mustRun(t, "", "secret", "inspect", "db_pw")
	e.mustRun(t, "", "service", "create", "web", "--secret", "db_pw")
	stop()

	out := log.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 2 {
		t.Fatalf("log:\n%s", out)
	}
	for _, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not a JSON line: %q: %v", line, err)
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := rec[k].(string); !ok {
				t.Errorf("line lacks %s: %s", k, line)
			}
		}
		if _, err := time.Parse(time.RFC3339Nano, rec["time"].(string)); err != nil {
			t.Errorf("time %v: %v", rec["time"], err)
		}
	}
	if !strings.Contains(out, `"msg":"manager ready"`) {
		t.Errorf("no manager ready line:\n%s", out)
	}
	for _, leak := range []string{canary, base64.StdEncoding.EncodeToString([]byte(canary))} {
		if strings.Contains(out, leak) {
			t.Fatalf("the log holds the secret (%q):\n%s", leak, out)
		}
	}
}
