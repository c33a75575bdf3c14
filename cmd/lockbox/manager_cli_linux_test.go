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
func runManagerCLI(t *testing.T, dataDir string, extra ...string) (host, addr string, log *logSink, stop func()) {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "manager.sock")
	addr = "127.0.0.1:" + freeTCPPort(t, "127.0.0.1")
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
	return "unix://" + sock, addr, log, stop
}

// The manager's --log-format json log is JSON lines, each with time, level
// and msg, at debug level too, and never carries a secret's bytes, in
// clear or base64, though a secret is created, listed and inspected while
// it runs.
func TestManagerJSONLog(t *testing.T) {
	host, _, log, stop := runManagerCLI(t, filepath.Join(t.TempDir(), "data"), "--log-format", "json", "--log-level", "debug")
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

// The agent's --log-format json log, at debug level, from its join through
// receiving a grant, is JSON lines with time, level and msg, and holds
// neither the join token nor the granted secret's bytes.
func TestAgentJSONLog(t *testing.T) {
	host, addr, _, _ := runManagerCLI(t, filepath.Join(t.TempDir(), "data"))
	e := &cliEnv{host: host}
	const canary = "agent-canary-91d2-secret-bytes"
	e.mustRun(t, canary, "secret", "create", "db_pw", "-")
	e.mustRun(t, "", "service", "create", "web", "--secret", "db_pw")
	token := strings.TrimSpace(e.mustRun(t, "", "join-token", "-q", "worker"))

	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	writeFile(t, tokenFile, token+"\n")
	// The re-execution that sets GODEBUG would run the test binary again:
	// give it the settings so that the agent runs in this process.
	t.Setenv("GODEBUG", "clobberfree=1,asyncpreemptoff=1")
	// Wait for the grant: the secret's bytes are then in the agent.
	log := newLogSink(`"msg":"applied"`)
	root := newRootCommand()
	root.SetOut(&bytes.Buffer{})
	root.SetErr(log)
	root.SetArgs([]string{"agent", "--manager", addr, "--token-file", tokenFile,
		"--state-dir", filepath.Join(dir, "state"), "--socket", filepath.Join(dir, "run", "agent.sock"),
		"--hostname", "json-log-node", "--log-format", "json", "--log-level", "debug"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	select {
	case <-log.found:
	case err := <-done:
		cancel()
		t.Fatalf("agent: %v\n%s", err, log)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatalf("agent not serving after 60s:\n%s", log)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("agent: %v", err)
	}
	out := log.String()
	granted := false
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not a JSON line: %q: %v", line, err)
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := rec[k].(string); !ok {
				t.Errorf("line lacks %s: %s", k, line)
			}
		}
		if n, _ := rec["changes"].(float64); rec["msg"] == "applied" && n > 0 {
			granted = true
		}
	}
	if !granted {
		t.Fatalf("the agent logged no applied grant: the test proves nothing\n%s", out)
	}
	for _, leak := range []string{canary, base64.StdEncoding.EncodeToString([]byte(canary)), token} {
		if strings.Contains(out, leak) {
			t.Fatalf("the log holds %q:\n%s", leak, out)
		}
	}
}

// logSink collects a daemon's log and says when a line with a given
// message has been written.
type logSink struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	want  string
	found chan struct{}
	once  sync.Once
}

func newLogSink(want string) *logSink { return &logSink{want: want, found: make(chan struct{})} }

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Write(p)
	if strings.Contains(s.buf.String(), s.want) {
		s.once.Do(func() { close(s.found) })
	}
	return len(p), nil
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}
