//go:build linux

package hotpath

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lockbox-project/lockbox/api/claim"
	"github.com/lockbox-project/lockbox/plugin/runtime/agentconn"
)

// fakeRunc is a shell script standing in for runc: it records each call's
// arguments in a file and, for create, writes a pid file like runc does.
const fakeRunc = `#!/bin/sh
echo "$*" >> "$CALLS"
case " $* " in *" state "*) echo '{"id":"c1","pid":4343,"status":"created"}'; exit 0;; esac
prev=
for a in "$@"; do
	if [ "$prev" = "--pid-file" ]; then echo 4242 > "$a"; fi
	prev=$a
done
exit ${FAKE_RUNC_EXIT:-0}
`

type fakeAgent struct {
	mu         sync.Mutex
	prepared   []prepareCall
	released   []string
	procs      []agentconn.Process
	err        error
	releaseErr error
	// targeted records Targets calls; targets and targetsErr answer them.
	targeted   []agentconn.Container
	targets    []string
	targetsErr error
}

func (a *fakeAgent) Targets(c *agentconn.Container) ([]string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.targeted = append(a.targeted, *c)
	return a.targets, a.targetsErr
}

func (a *fakeAgent) Prepare(c *agentconn.Container, attach bool) ([]agentconn.Mount, []*os.File, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.prepared = append(a.prepared, prepareCall{*c, attach})
	if a.err != nil {
		return nil, nil, a.err
	}
	return []agentconn.Mount{{Target: "/run/secrets", FdIndex: -1}}, nil, nil
}

func (a *fakeAgent) Release(id string, p agentconn.Process) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.released = append(a.released, id)
	a.procs = append(a.procs, p)
	return a.releaseErr
}

func (a *fakeAgent) Close() error { return nil }

type rig struct {
	dir, bundle, calls, socket string
	agent                      *fakeAgent
	execs                      [][]string
	stderr                     bytes.Buffer
	w                          *Wrapper
}

func newRig(t *testing.T, spec *specs.Spec) *rig {
	t.Helper()
	r := &rig{dir: t.TempDir(), agent: &fakeAgent{}}
	r.bundle = filepath.Join(r.dir, "bundle")
	r.calls = filepath.Join(r.dir, "calls")
	r.socket = filepath.Join(r.dir, "agent.sock")
	if err := os.MkdirAll(r.bundle, 0o700); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.bundle, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	runc := filepath.Join(r.dir, "runc")
	if err := os.WriteFile(runc, []byte(fakeRunc), 0o700); err != nil {
		t.Fatal(err)
	}
	// The socket only has to exist for delete to try the agent.
	if err := os.WriteFile(r.socket, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CALLS", r.calls)
	r.w = &Wrapper{
		Runc:     runc,
		Socket:   r.socket,
		Dial:     func(string, time.Duration) (Agent, error) { return r.agent, nil },
		HookPath: "/usr/local/bin/lockbox-runtime",
		Stderr:   &r.stderr,
		Exec: func(argv0 string, argv, env []string) error {
			r.execs = append(r.execs, argv)
			return nil
		},
	}
	return r
}

func (r *rig) runcCalls(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(r.calls)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func (r *rig) readSpec(t *testing.T) *specs.Spec {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

func claiming(service string) *specs.Spec {
	return &specs.Spec{
		Version:     specs.Version,
		Root:        &specs.Root{Path: "rootfs"},
		Annotations: map[string]string{ServiceAnnotation: service},
		Mounts:      []specs.Mount{{Destination: "/run", Type: "tmpfs", Source: "tmpfs"}},
	}
}

func (r *rig) createArgs() []string {
	return []string{"--root", filepath.Join(r.dir, "state"), "--log", filepath.Join(r.dir, "log.json"), "--log-format", "json",
		"create", "--bundle", r.bundle, "--pid-file", filepath.Join(r.dir, "init.pid"), "c1"}
}

func TestNonClaimingCreateExecsRuncUntouched(t *testing.T) {
	r := newRig(t, &specs.Spec{Version: specs.Version, Annotations: map[string]string{"other": "lockbox.service"}})
	args := r.createArgs()
	if code := r.w.Main(args); code != 0 {
		t.Fatalf("exit %d: %s", code, r.stderr.String())
	}
	want := append([]string{r.w.Runc}, args...)
	if len(r.execs) != 1 || !reflect.DeepEqual(r.execs[0], want) {
		t.Fatalf("execs = %q, want one exec of %q", r.execs, want)
	}
	if len(r.agent.prepared) != 0 || r.runcCalls(t) != nil {
		t.Fatalf("non-claiming container reached the agent or a runc child")
	}
}

func TestOtherCommandsPassThrough(t *testing.T) {
	for _, args := range [][]string{
		{"--root", "/r", "start", "c1"},
		{"--root", "/r", "kill", "c1", "9"},
		{"state", "c1"},
		{"--version"},
		{"create", "--bundle"}, // unparseable: runc judges
	} {
		r := newRig(t, claiming("web"))
		r.w.Main(args)
		if len(r.execs) != 1 || !reflect.DeepEqual(r.execs[0][1:], args) {
			t.Errorf("%q: execs = %q", args, r.execs)
		}
	}
}

func TestClaimingCreateAttachesAfterCreate(t *testing.T) {
	spec := claiming("web")
	spec.Linux = &specs.Linux{
		UIDMappings: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}},
		GIDMappings: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 200000, Size: 65536}},
	}
	r := newRig(t, spec)
	args := r.createArgs()
	if code := r.w.Main(args); code != 0 {
		t.Fatalf("exit %d: %s", code, r.stderr.String())
	}
	if len(r.execs) != 0 {
		t.Fatalf("claiming create exec'd runc instead of waiting for it: %q", r.execs)
	}
	if calls := r.runcCalls(t); len(calls) != 1 || calls[0] != strings.Join(args, " ") {
		t.Fatalf("runc calls = %q, want the original create", calls)
	}
	if len(r.agent.prepared) != 1 {
		t.Fatalf("prepared %d times", len(r.agent.prepared))
	}
	got := r.agent.prepared[0]
	want := agentconn.Container{
		ID: "c1", Service: "web", Pid: 4242, Rootfs: "/", OS: "linux",
		UIDMappings: []agentconn.IDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}},
		GIDMappings: []agentconn.IDMapping{{ContainerID: 0, HostID: 200000, Size: 65536}},
		// runc's --root is <dir>/state: the runc shim's <root>/<namespace>.
		Facts: &agentconn.Facts{ContainerdNamespace: "state"},
	}
	if !got.attach || !reflect.DeepEqual(got.ctr, want) {
		t.Fatalf("prepare = %+v, want attach of %+v", got, want)
	}
}

func TestClaimingCreateWithoutPidFileAsksRuncState(t *testing.T) {
	r := newRig(t, claiming("web"))
	root := filepath.Join(r.dir, "state")
	if code := r.w.Main([]string{"--root", root, "create", "--bundle", r.bundle, "c1"}); code != 0 {
		t.Fatalf("exit %d: %s", code, r.stderr.String())
	}
	if len(r.agent.prepared) != 1 || r.agent.prepared[0].ctr.Pid != 4343 {
		t.Fatalf("prepared %v, want pid 4343 from runc state", r.agent.prepared)
	}
	if calls := r.runcCalls(t); len(calls) != 2 || calls[1] != "--root "+root+" state c1" {
		t.Fatalf("runc calls = %q", calls)
	}
}

func TestNotGrantedFailsAndDeletes(t *testing.T) {
	r := newRig(t, claiming("web"))
	r.agent.err = errString("agent: NOT_GRANTED: service web has no grant on node n1")
	args := r.createArgs()
	if code := r.w.Main(args); code == 0 {
		t.Fatal("create of a container claiming an ungranted service succeeded")
	}
	calls := r.runcCalls(t)
	wantDelete := "--root " + filepath.Join(r.dir, "state") + " --log " + filepath.Join(r.dir, "log.json") + " --log-format json delete --force c1"
	if len(calls) != 2 || calls[1] != wantDelete {
		t.Fatalf("runc calls = %q, want create then %q", calls, wantDelete)
	}
	if !strings.Contains(r.stderr.String(), `claims service "web"`) {
		t.Errorf("stderr %q does not name the service", r.stderr.String())
	}
	log, err := os.ReadFile(filepath.Join(r.dir, "log.json"))
	if err != nil {
		t.Fatal(err)
	}
	var line struct{ Level, Msg string }
	if err := json.Unmarshal(bytes.TrimSpace(log), &line); err != nil {
		t.Fatalf("log line %q: %v", log, err)
	}
	if line.Level != "error" || !strings.Contains(line.Msg, "no grant") {
		t.Errorf("log line = %+v", line)
	}
}

// With the agent down a claiming create fails before runc builds anything.
func TestAgentDownFailsClosed(t *testing.T) {
	r := newRig(t, claiming("web"))
	r.w.Dial = func(s string, _ time.Duration) (Agent, error) {
		return nil, errString("dial agent at " + s + ": connection refused")
	}
	if code := r.w.Main(r.createArgs()); code == 0 {
		t.Fatal("claiming container created with the agent down")
	}
	if calls := r.runcCalls(t); calls != nil || len(r.execs) != 0 {
		t.Fatalf("runc calls = %q, execs = %q: runc ran with the agent down", calls, r.execs)
	}
	if !strings.Contains(r.stderr.String(), "agent not reachable") || !strings.Contains(r.stderr.String(), `"web"`) {
		t.Errorf("stderr = %q", r.stderr.String())
	}
}

func TestRuncCreateFailureIsReturned(t *testing.T) {
	r := newRig(t, claiming("web"))
	t.Setenv("FAKE_RUNC_EXIT", "3")
	if code := r.w.Main(r.createArgs()); code != 3 {
		t.Fatalf("exit %d, want runc's 3", code)
	}
	if len(r.agent.prepared) != 0 {
		t.Fatal("prepared after runc create failed")
	}
}

func TestEmptyServiceFailsClosed(t *testing.T) {
	r := newRig(t, claiming(""))
	if code := r.w.Main(r.createArgs()); code == 0 {
		t.Fatal("empty lockbox.service accepted")
	}
	if len(r.execs) != 0 || r.runcCalls(t) != nil {
		t.Fatal("runc ran for a container with an empty claim")
	}
}

// A read-only rootfs gets a read-only bind of the agent's empty file at
// every target the agent names, before runc's create (issue 12: a target
// whose directory the image lacks could not be made after it).
func TestReadonlyRootfsGetsMountpoints(t *testing.T) {
	spec := claiming("web")
	spec.Root.Readonly = true
	spec.Mounts = []specs.Mount{{Destination: "/proc", Type: "proc", Source: "proc"}}
	r := newRig(t, spec)
	r.agent.targets = []string{"/run/secrets/db_pw", "/etc/app/cert.pem"}
	// A key this binary's runtime-spec may not know must survive the rewrite.
	p := filepath.Join(r.bundle, "config.json")
	b, _ := os.ReadFile(p)
	b = append(b[:len(b)-1], []byte(`,"x-future":{"a":1}}`)...)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if code := r.w.Main(r.createArgs()); code != 0 {
		t.Fatalf("exit %d: %s", code, r.stderr.String())
	}
	s := r.readSpec(t)
	if len(s.Mounts) != 3 || s.Mounts[0].Destination != "/proc" {
		t.Fatalf("mounts = %+v, want /proc and one bind per target", s.Mounts)
	}
	for i, target := range r.agent.targets {
		m := s.Mounts[i+1]
		if m.Destination != target || m.Type != "bind" || m.Source != claim.MountpointSource || !slices.Contains(m.Options, "ro") {
			t.Errorf("mount for %s = %+v, want a read-only bind of %s", target, m, claim.MountpointSource)
		}
		if m.Type == "tmpfs" {
			t.Errorf("a tmpfs placeholder at %s", m.Destination)
		}
	}
	b, _ = os.ReadFile(p)
	if !bytes.Contains(b, []byte(`"x-future":{"a":1}`)) {
		t.Fatalf("unknown key lost: %s", b)
	}
	if len(r.agent.targeted) != 1 || !r.agent.targeted[0].ReadonlyRootfs || r.agent.targeted[0].Service != "web" || r.agent.targeted[0].ID != "c1" {
		t.Errorf("targets asked %+v", r.agent.targeted)
	}
	if !r.agent.prepared[0].ctr.ReadonlyRootfs {
		t.Error("readonly_rootfs not passed to the agent")
	}
}

// Only a container whose root the agent cannot write costs the targets
// round trip; a claim the agent refuses fails before runc creates anything.
func TestMountpointsOnlyWhenNeeded(t *testing.T) {
	userns := &specs.Linux{UIDMappings: []specs.LinuxIDMapping{{HostID: 100000, Size: 65536}}}
	for _, tt := range []struct {
		name     string
		readonly bool
		linux    *specs.Linux
		asked    bool
	}{
		{"writable", false, nil, false},
		{"read-only", true, nil, true},
		{"user namespace", false, userns, true},
	} {
		spec := claiming("web")
		spec.Root.Readonly, spec.Linux, spec.Mounts = tt.readonly, tt.linux, nil
		r := newRig(t, spec)
		r.agent.targets = []string{"/run/secrets/a"}
		if code := r.w.Main(r.createArgs()); code != 0 {
			t.Fatalf("%s: exit %d: %s", tt.name, code, r.stderr.String())
		}
		if asked := len(r.agent.targeted) == 1; asked != tt.asked {
			t.Errorf("%s: targets asked %v, want %v", tt.name, asked, tt.asked)
		}
		if binds := len(r.readSpec(t).Mounts); binds != map[bool]int{false: 0, true: 1}[tt.asked] {
			t.Errorf("%s: %d mounts added", tt.name, binds)
		}
	}

	spec := claiming("web")
	spec.Root.Readonly = true
	r := newRig(t, spec)
	r.agent.targetsErr = &agentconn.Error{Code: agentconn.NotGranted, Message: `service "web" is not granted to this node`}
	if code := r.w.Main(r.createArgs()); code == 0 {
		t.Fatal("a claim the agent refused was created")
	}
	if calls := r.runcCalls(t); calls != nil || len(r.agent.prepared) != 0 {
		t.Fatalf("runc ran (%q) or the agent prepared (%d) after the targets were refused", calls, len(r.agent.prepared))
	}
	if !strings.Contains(r.stderr.String(), "not granted") {
		t.Errorf("stderr %q does not say why", r.stderr.String())
	}
}

func TestRunInjectsHooks(t *testing.T) {
	r := newRig(t, claiming("web"))
	args := []string{"run", "--bundle", r.bundle, "c1"}
	if code := r.w.Main(args); code != 0 {
		t.Fatalf("exit %d: %s", code, r.stderr.String())
	}
	if len(r.execs) != 1 {
		t.Fatalf("run was not exec'd: %q", r.execs)
	}
	s := r.readSpec(t)
	if s.Hooks == nil || len(s.Hooks.CreateContainer) != 1 || len(s.Hooks.Poststop) != 1 {
		t.Fatalf("hooks = %+v", s.Hooks)
	}
	h := s.Hooks.CreateContainer[0]
	if h.Path != r.w.HookPath || !reflect.DeepEqual(h.Args, []string{"lockbox-runtime", "hook", "createContainer"}) ||
		!reflect.DeepEqual(h.Env, []string{"LOCKBOX_AGENT_SOCKET=" + r.socket}) {
		t.Fatalf("createContainer hook = %+v", h)
	}
	if len(r.agent.prepared) != 0 {
		t.Fatal("hook mode called the agent from the wrapper")
	}
}

func TestDeleteReleasesThenExecs(t *testing.T) {
	r := newRig(t, claiming("web"))
	args := []string{"--root", "/r", "delete", "--force", "c9"}
	r.w.Main(args)
	if !reflect.DeepEqual(r.agent.released, []string{"c9"}) {
		t.Fatalf("released = %q", r.agent.released)
	}
	if len(r.execs) != 1 || !reflect.DeepEqual(r.execs[0][1:], args) {
		t.Fatalf("execs = %q", r.execs)
	}
}

func TestDeleteGoesOnWhenReleaseFails(t *testing.T) {
	r := newRig(t, claiming("web"))
	r.agent.releaseErr = errString("agent: receive: timed out waiting for the agent")
	args := []string{"--root", "/r", "--log", filepath.Join(r.dir, "log.json"), "--log-format", "json", "delete", "c9"}
	r.w.Main(args)
	if len(r.execs) != 1 || !reflect.DeepEqual(r.execs[0][1:], args) {
		t.Fatalf("execs = %q", r.execs)
	}
	b, err := os.ReadFile(filepath.Join(r.dir, "log.json"))
	if err != nil || !bytes.Contains(b, []byte(`"level":"warning"`)) || !bytes.Contains(b, []byte("release c9")) {
		t.Fatalf("log %q, %v: want a warning naming the release", b, err)
	}
}

func TestDeleteSkipsAgentForRuncStateWithoutClaim(t *testing.T) {
	for _, tc := range []struct {
		name, state string
		release     bool
		// proc is the process the release names: runc's init, which
		// binds the release to this container (the agent leaves a
		// running holder of the same ID in another namespace alone).
		proc agentconn.Process
	}{
		{"claimed", `{"config":{"labels":["lockbox.service=web","bundle=/b"]}}`, true, agentconn.Process{}},
		{"claimed, with init process", `{"id":"c9","init_process_pid":4242,"init_process_start":987654321,"config":{"labels":["lockbox.service=web","bundle=/b"]}}`,
			true, agentconn.Process{Pid: 4242, Start: 987654321}},
		{"claimed, pid without start", `{"init_process_pid":4242,"config":{"labels":["lockbox.service=web"]}}`, true, agentconn.Process{Pid: 4242}},
		{"claimed, pid out of range", `{"init_process_pid":99999999999,"init_process_start":5,"config":{"labels":["lockbox.service=web"]}}`, true, agentconn.Process{}},
		{"claimed, pid not a number", `{"init_process_pid":"x","config":{"labels":["lockbox.service=web"]}}`, true, agentconn.Process{}},
		{"not claimed", `{"config":{"labels":["bundle=/b"]}}`, false, agentconn.Process{}},
		{"no state file", "", true, agentconn.Process{}},
		{"no container dir", "-", false, agentconn.Process{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, claiming("web"))
			root := filepath.Join(r.dir, "runc-root")
			if err := os.MkdirAll(root, 0o700); err != nil {
				t.Fatal(err)
			}
			if tc.state == "" {
				if err := os.MkdirAll(filepath.Join(root, "c9"), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			if tc.state != "" && tc.state != "-" {
				if err := os.MkdirAll(filepath.Join(root, "c9"), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(root, "c9", "state.json"), []byte(tc.state), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			r.w.Main([]string{"--root", root, "delete", "c9"})
			if got := len(r.agent.released) == 1; got != tc.release {
				t.Fatalf("released = %v, want release %v", r.agent.released, tc.release)
			}
			if tc.release && r.agent.procs[0] != tc.proc {
				t.Errorf("release names process %+v, want %+v", r.agent.procs[0], tc.proc)
			}
			if len(r.execs) != 1 {
				t.Fatalf("execs = %q", r.execs)
			}
		})
	}
}

func TestDeleteWithoutAgentSocket(t *testing.T) {
	r := newRig(t, claiming("web"))
	os.Remove(r.socket)
	r.w.Dial = func(string, time.Duration) (Agent, error) { t.Fatal("dialed a missing socket"); return nil, nil }
	r.w.Main([]string{"delete", "c9"})
	if len(r.execs) != 1 {
		t.Fatalf("execs = %q", r.execs)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// FuzzReadClaim decodes config.json with the wrapper's partial decode and
// with the full runtime-spec Spec: whenever the full decode accepts a
// document, the partial one must accept it and read the same claim.
func FuzzReadClaim(f *testing.F) {
	f.Add([]byte(`{"annotations":{"lockbox.service":"web"}}`))
	f.Add([]byte(`{"process":{"env":["lockbox.service"]}}`))
	f.Add([]byte(`{"annotations":{"lockbox.service":""}, "root":{"readonly":true}}`))
	f.Add([]byte(`{"annotations":{"lockbox.service":"w","io.kubernetes.cri.container-type":"sandbox"}}`))
	f.Add([]byte(`{"root":{"path":"rootfs","readonly":true},"mounts":[{"destination":"/run"}],"linux":{"uidMappings":[{"containerID":0,"hostID":1000,"size":1}]},"annotations":{"lockbox.service":"web"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseClaim(b, "config.json")
		var spec specs.Spec
		if json.Unmarshal(b, &spec) != nil {
			return
		}
		service, claims := spec.Annotations[ServiceAnnotation]
		if spec.Annotations[CRIContainerType] == "sandbox" || !bytes.Contains(b, annotationKey) {
			claims = false
		}
		switch {
		case claims && service == "":
			if err != ErrEmptyService {
				t.Fatalf("empty service: %v, %v", c, err)
			}
			return
		case err != nil:
			t.Fatalf("the runtime-spec decodes %q, the wrapper says %v", b, err)
		case claims != (c != nil):
			t.Fatalf("claims %v, wrapper's claim %+v", claims, c)
		case c == nil:
			return
		}
		// The facts come from the annotations the full decode read: the
		// partial decode must read the same ones.
		want := &Claim{Service: service, Facts: SpecFacts(spec.Annotations)}
		if spec.Root != nil {
			want.RootPath, want.ReadonlyRootfs = spec.Root.Path, spec.Root.Readonly
		}
		if spec.Linux != nil {
			for _, m := range spec.Linux.UIDMappings {
				want.UIDMappings = append(want.UIDMappings, agentconn.IDMapping{ContainerID: m.ContainerID, HostID: m.HostID, Size: m.Size})
			}
			for _, m := range spec.Linux.GIDMappings {
				want.GIDMappings = append(want.GIDMappings, agentconn.IDMapping{ContainerID: m.ContainerID, HostID: m.HostID, Size: m.Size})
			}
		}
		got := *c
		got.raw, got.path = nil, ""
		if !reflect.DeepEqual(&got, want) {
			t.Fatalf("%q:\n got %+v\nwant %+v", b, &got, want)
		}
		c.NeedsMountpoints()
		_ = c.Container("x", 1, "/")
	})
}

// A target that would hide a mount of the spec is refused before runc
// could cover it, by name (issue 12: a claim must never hide what the
// container has mounted).
func TestMountpointsRefuseACollision(t *testing.T) {
	spec := claiming("web")
	spec.Root.Readonly = true
	spec.Mounts = []specs.Mount{{Destination: "/var/run/secrets/kubernetes.io/serviceaccount", Type: "bind", Source: "/x", Options: []string{"rbind", "ro"}}}
	r := newRig(t, spec)
	r.agent.targets = []string{"/run/secrets/db_pw", "/run/secrets/kubernetes.io/serviceaccount/token"}
	if code := r.w.Main(r.createArgs()); code == 0 {
		t.Fatal("a target in the service-account volume was accepted")
	}
	if calls := r.runcCalls(t); calls != nil {
		t.Fatalf("runc ran: %q", calls)
	}
	if msg := r.stderr.String(); !strings.Contains(msg, "/run/secrets/kubernetes.io/serviceaccount/token") || !strings.Contains(msg, "collides with the mount") {
		t.Errorf("stderr %q does not name the collision", msg)
	}
	if s := r.readSpec(t); len(s.Mounts) != 1 {
		t.Errorf("the spec was rewritten: %+v", s.Mounts)
	}
}

func TestNeedsMountpoints(t *testing.T) {
	userns := &specs.Linux{UIDMappings: []specs.LinuxIDMapping{{HostID: 100000, Size: 65536}}}
	tests := []struct {
		name     string
		readonly bool
		linux    *specs.Linux
		want     bool
	}{
		{"read-write", false, nil, false},
		{"read-only", true, nil, true},
		{"userns", false, userns, true},
		{"userns, read-only", true, userns, true},
	}
	for _, tt := range tests {
		spec := claiming("web")
		spec.Root.Readonly, spec.Linux = tt.readonly, tt.linux
		b, err := json.Marshal(spec)
		if err != nil {
			t.Fatal(err)
		}
		c, err := parseClaim(b, "config.json")
		if err != nil || c == nil {
			t.Fatalf("%s: claim %v, %v", tt.name, c, err)
		}
		if got := c.NeedsMountpoints(); got != tt.want {
			t.Errorf("%s: NeedsMountpoints = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestSandboxContainerIsLeftAlone(t *testing.T) {
	spec := claiming("web")
	spec.Annotations["io.kubernetes.cri.container-type"] = "sandbox"
	r := newRig(t, spec)
	if code := r.w.Main(r.createArgs()); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if len(r.execs) != 1 || len(r.agent.prepared) != 0 {
		t.Fatalf("pause container was not passed through: execs %q, prepared %d", r.execs, len(r.agent.prepared))
	}
}
