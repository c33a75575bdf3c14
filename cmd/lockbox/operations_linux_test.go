package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/manager"
)

// docBlocks returns the shell blocks of docs/operations.md that follow a
// "<!-- tested: NAME -->" line, by name: the test runs what the page shows.
func docBlocks(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	blocks := map[string]string{}
	name, in := "", false
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "<!-- tested: "):
			name = strings.TrimSuffix(strings.TrimPrefix(line, "<!-- tested: "), " -->")
		case name != "" && !in && strings.HasPrefix(line, "```"):
			in = true
		case in && line == "```":
			blocks[name] = cur.String()
			cur.Reset()
			name, in = "", false
		case in:
			cur.WriteString(line + "\n")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return blocks
}

// toolsPath puts $LOCKBOX_TOOLS/bin (hack/deps.sh: etcdctl, etcdutl) first
// on PATH. A missing tool fails the test under make (which exports
// LOCKBOX_TOOLS after running hack/deps.sh) or CI, and skips it in a bare
// go test.
func toolsPath(t *testing.T, tools ...string) {
	t.Helper()
	dir := os.Getenv("LOCKBOX_TOOLS")
	if dir == "" {
		dir = "/opt/lockbox/tools"
	}
	t.Setenv("PATH", filepath.Join(dir, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" || os.Getenv("LOCKBOX_TOOLS") != "" {
				t.Fatalf("%s missing: run hack/deps.sh", tool)
			}
			t.Skipf("%s missing: run hack/deps.sh", tool)
		}
	}
}

// runDoc runs a block of the page with sh -eu, its example paths replaced
// by the test's.
func runDoc(t *testing.T, block string, paths map[string]string) string {
	t.Helper()
	for from, to := range paths {
		block = strings.ReplaceAll(block, from, to)
	}
	out, err := exec.Command("sh", "-eu", "-c", block).CombinedOutput()
	if err != nil {
		t.Fatalf("sh:\n%s\n%v\n%s", block, err, out)
	}
	return string(out)
}

// inProcessManager runs package manager's Manager with cfg until stop.
type inProcessManager struct {
	m    *manager.Manager
	stop func()
}

func startManager(t *testing.T, cfg manager.Config) *inProcessManager {
	t.Helper()
	m, err := manager.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	select {
	case <-m.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("manager did not start: %v", err)
	case <-time.After(90 * time.Second):
		cancel()
		t.Fatal("manager not ready after 90s")
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				t.Error("manager did not stop in 60s")
			}
		})
	}
	t.Cleanup(stop)
	return &inProcessManager{m: m, stop: stop}
}

// TestBackupAndRestore follows docs/operations.md: a secret created on a
// manager, the page's backup (etcdctl snapshot save against the embedded
// member's client socket, and a tar of the rest of the data dir) taken
// while it runs, the page's restore (the tar, then etcdutl snapshot
// restore) into a fresh data dir, a manager started on it — unlocked with
// the unlock key under autolock — and the secret's bytes read back from
// the restored store. A secret created after the backup is not there.
func TestBackupAndRestore(t *testing.T) {
	toolsPath(t, "etcdctl", "etcdutl", "tar")
	blocks := docBlocks(t)
	for _, name := range []string{"backup", "restore"} {
		if blocks[name] == "" {
			t.Fatalf("docs/operations.md has no tested block %q", name)
		}
	}
	for _, autolock := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "autolock"}[autolock], func(t *testing.T) {
			dir := t.TempDir()
			var printed bytes.Buffer
			cfg := manager.Config{
				DataDir:         filepath.Join(dir, "old"),
				ListenAddr:      "127.0.0.1:" + freeTCPPort(t, "127.0.0.1"),
				AdminSocket:     filepath.Join(dir, "run", "manager.sock"),
				Autolock:        autolock,
				Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
				Out:             &printed,
				EtcdPeerPort:    peerPort(t),
				HeartbeatPeriod: time.Second,
			}
			cfg.AdvertiseAddr = cfg.ListenAddr
			old := startManager(t, cfg)
			e := &cliEnv{host: "unix://" + cfg.AdminSocket}
			const data = "restored-secret-bytes-7c1d"
			id := strings.TrimSpace(e.mustRun(t, data, "secret", "create", "db_pw", "-"))

			backup := filepath.Join(dir, "backup")
			paths := map[string]string{"/var/lib/lockbox/manager": cfg.DataDir, "/backup/lockbox": backup}
			runDoc(t, blocks["backup"], paths)
			e.mustRun(t, "later", "secret", "create", "after_backup", "-")
			old.stop()

			// Restore into a fresh data dir on the same address.
			fresh := filepath.Join(dir, "fresh")
			paths["/var/lib/lockbox/manager"] = fresh
			runDoc(t, blocks["restore"], paths)
			cfg.DataDir, cfg.Out = fresh, io.Discard
			restored := startManager(t, cfg)
			if autolock {
				key := regexp.MustCompile(`LBXKEY-1-\S+`).FindString(printed.String())
				if key == "" {
					t.Fatalf("no unlock key printed: %q", printed.String())
				}
				if _, err := e.run(t, "", "secret", "ls"); err == nil || !strings.Contains(err.Error(), "locked") {
					t.Fatalf("restored autolock manager served before unlock: %v", err)
				}
				e.mustRun(t, key+"\n", "unlock")
			}
			if out := e.mustRun(t, "", "secret", "inspect", "--format", "{{.ID}}", "db_pw"); strings.TrimSpace(out) != id {
				t.Fatalf("secret inspect db_pw = %q, want %s", out, id)
			}
			got, err := restored.m.Store().SecretData(context.Background(), id)
			if err != nil || string(got) != data {
				t.Fatalf("restored secret data = %q, %v; want %q", got, err, data)
			}
			if _, err := e.run(t, "", "secret", "inspect", "after_backup"); err == nil {
				t.Fatal("a secret created after the backup is in the restore")
			}
		})
	}
}

func peerPort(t *testing.T) int {
	t.Helper()
	p, err := strconv.Atoi(freeTCPPort(t, "127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}
