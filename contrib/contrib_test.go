package contrib

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v4"
)

// unit is a parsed systemd unit: section → key → values, in file order
// (a key may repeat).
type unit map[string]map[string][]string

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a key=value in a section: %q", path, n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

func (u unit) one(t *testing.T, section, key string) string {
	t.Helper()
	vs := u[section][key]
	if len(vs) == 0 {
		t.Errorf("[%s] %s= missing", section, key)
		return ""
	}
	return vs[len(vs)-1]
}

func (u unit) words(section, key string) []string {
	var out []string
	for _, v := range u[section][key] {
		out = append(out, strings.Fields(v)...)
	}
	return out
}

// mountNamespaceKeys each give a service a mount namespace of its own
// (systemd.exec(5)); the agent must stay in the host's to mount into
// containers' namespaces and have its mountpoint files seen by runtimes.
var mountNamespaceKeys = []string{
	"ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "ReadWritePaths",
	"ReadOnlyPaths", "InaccessiblePaths", "TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths",
	"ProtectKernelModules", "ProtectKernelTunables", "ProtectKernelLogs", "ProtectControlGroups",
	"ProtectProc", "ProcSubset", "PrivateMounts", "MountFlags", "RootDirectory", "RootImage",
}

func TestAgentUnit(t *testing.T) {
	u := parseUnit(t, "systemd/lockbox-agent.service")
	if !slices.Contains(u.words("Unit", "Before"), "containerd.service") {
		t.Errorf("agent not ordered Before=containerd.service: containers started at boot would not find it")
	}
	if !slices.Contains(u.words("Install", "WantedBy"), "containerd.service") {
		t.Errorf("agent not WantedBy=containerd.service: starting containerd would not start it")
	}
	if got := u.one(t, "Service", "ExecStart"); !strings.HasPrefix(got, "/usr/local/bin/lockbox agent ") || !strings.Contains(got, "$LOCKBOX_AGENT_OPTS") {
		t.Errorf("ExecStart=%q: want /usr/local/bin/lockbox agent ... $LOCKBOX_AGENT_OPTS", got)
	}
	if got := u.one(t, "Service", "EnvironmentFile"); got != "-/etc/default/lockbox-agent" {
		t.Errorf("EnvironmentFile=%q", got)
	}
	if got := u.one(t, "Service", "LimitMEMLOCK"); got != "infinity" {
		t.Errorf("LimitMEMLOCK=%q: the grants live in locked memory, as many as the node's services reference, and the agent has no CAP_IPC_LOCK", got)
	}
	if got := u.one(t, "Service", "LimitCORE"); got != "0" {
		t.Errorf("LimitCORE=%q: a core dump would hold the grants", got)
	}
	caps := u.words("Service", "CapabilityBoundingSet")
	want := []string{"CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_DAC_OVERRIDE", "CAP_CHOWN", "CAP_FOWNER", "CAP_KILL"}
	slices.Sort(caps)
	slices.Sort(want)
	if !slices.Equal(caps, want) {
		t.Errorf("CapabilityBoundingSet = %v, want exactly %v", caps, want)
	}
	for _, k := range mountNamespaceKeys {
		if _, ok := u["Service"][k]; ok {
			t.Errorf("%s= gives the agent a mount namespace of its own: it must mount into containers from the host's", k)
		}
	}
	if got := u.one(t, "Service", "NoNewPrivileges"); got != "yes" {
		t.Errorf("NoNewPrivileges=%q", got)
	}
	if got := u.one(t, "Service", "RestrictNamespaces"); got != "mnt" {
		t.Errorf("RestrictNamespaces=%q: the agent enters mount namespaces only", got)
	}
	if got := u.one(t, "Service", "RuntimeDirectoryPreserve"); got != "yes" {
		t.Errorf("RuntimeDirectoryPreserve=%q: /run/lockbox is shared with the manager's unit", got)
	}
}

func TestManagerUnit(t *testing.T) {
	u := parseUnit(t, "systemd/lockbox-manager.service")
	if got := u.one(t, "Service", "ExecStart"); !strings.HasPrefix(got, "/usr/local/bin/lockbox manager --data-dir /var/lib/lockbox/manager") || !strings.Contains(got, "$LOCKBOX_MANAGER_OPTS") {
		t.Errorf("ExecStart=%q", got)
	}
	if got := u.one(t, "Service", "EnvironmentFile"); got != "-/etc/default/lockbox-manager" {
		t.Errorf("EnvironmentFile=%q", got)
	}
	// The manager needs no capability: run as root only for its
	// root-only admin socket (tried: a manager with an empty bounding set
	// initialises a cluster and serves secret create and ls).
	if caps := u["Service"]["CapabilityBoundingSet"]; len(caps) != 1 || caps[0] != "" {
		t.Errorf("CapabilityBoundingSet=%q, want empty", caps)
	}
	for k, want := range map[string]string{
		"LimitNOFILE": "65536", "LimitCORE": "0", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
		"StateDirectory": "lockbox/manager", "StateDirectoryMode": "0700", "RuntimeDirectory": "lockbox",
		"RuntimeDirectoryPreserve": "yes", "PrivateTmp": "yes", "ProtectHome": "yes",
	} {
		if got := u.one(t, "Service", k); got != want {
			t.Errorf("%s=%q, want %q", k, got, want)
		}
	}
}

// TestUnitsVerify runs systemd-analyze verify on both units. It needs no
// running systemd: --root points it at a tree holding the units, the
// binaries they name and systemd's own units (their targets).
func TestUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		// make exports LOCKBOX_TOOLS after hack/deps.sh, which installs
		// systemd when systemd-analyze is missing.
		if os.Getenv("CI") != "" || os.Getenv("LOCKBOX_TOOLS") != "" {
			t.Fatal("systemd-analyze missing: run hack/deps.sh")
		}
		t.Skip("systemd-analyze not installed")
	}
	sysUnits := "/usr/lib/systemd/system"
	if _, err := os.Stat(filepath.Join(sysUnits, "sysinit.target")); err != nil {
		sysUnits = "/lib/systemd/system"
	}
	root := t.TempDir()
	copyTree(t, sysUnits, filepath.Join(root, "usr/lib/systemd/system"))
	for _, exe := range []string{"/usr/local/bin/lockbox", "/bin/sh"} {
		p := filepath.Join(root, exe)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		// verify checks that the command exists and is executable.
		if err := os.WriteFile(p, []byte("#!/bin/true\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	etc := filepath.Join(root, "etc/systemd/system")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, name := range []string{"lockbox-agent.service", "lockbox-manager.service"} {
		b, err := os.ReadFile(filepath.Join("systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(etc, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, filepath.Join(etc, name))
	}
	// Unknown keys and bad values are warnings with exit status 0: any
	// output is a failure.
	out, err := exec.Command(analyze, append([]string{"verify", "--root=" + root}, args...)...).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	if err := os.CopyFS(to, os.DirFS(from)); err != nil {
		// Debian's tree holds symlinks (aliases, masks) CopyFS refuses:
		// fall back to cp, which keeps them.
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			t.Fatal(err)
		}
		os.RemoveAll(to)
		if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
			t.Fatalf("cp -a %s %s: %v\n%s", from, to, err, out)
		}
	}
}

func readYAML(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return doc
}

// get walks a parsed YAML document by map keys and list indexes.
func get(t *testing.T, doc any, path ...any) any {
	t.Helper()
	cur := doc
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := cur.(map[string]any)
			if !ok {
				t.Fatalf("%v: not a map at %q", path, k)
			}
			cur = m[k]
		case int:
			l, ok := cur.([]any)
			if !ok || k >= len(l) {
				t.Fatalf("%v: no item %d", path, k)
			}
			cur = l[k]
		}
	}
	return cur
}

func TestRuntimeClass(t *testing.T) {
	doc := readYAML(t, "kubernetes/runtimeclass.yaml")
	for _, c := range []struct {
		path []any
		want any
	}{
		{[]any{"apiVersion"}, "node.k8s.io/v1"},
		{[]any{"kind"}, "RuntimeClass"},
		{[]any{"metadata", "name"}, "lockbox"},
		{[]any{"handler"}, "lockbox"},
	} {
		if got := get(t, doc, c.path...); got != c.want {
			t.Errorf("%v = %v, want %v", c.path, got, c.want)
		}
	}
}

func TestNRIDaemonSet(t *testing.T) {
	doc := readYAML(t, "kubernetes/lockbox-nri-daemonset.yaml")
	spec := []any{"spec", "template", "spec"}
	ctr := append(append([]any{}, spec...), "containers", 0)
	for _, c := range []struct {
		path []any
		want any
	}{
		{[]any{"apiVersion"}, "apps/v1"},
		{[]any{"kind"}, "DaemonSet"},
		{[]any{"metadata", "namespace"}, "kube-system"},
		// NRI hands the plugin host pids.
		{append(append([]any{}, spec...), "hostPID"), true},
		{append(append([]any{}, ctr...), "securityContext", "runAsUser"), 0},
		{append(append([]any{}, ctr...), "securityContext", "privileged"), false},
		{append(append([]any{}, ctr...), "securityContext", "allowPrivilegeEscalation"), false},
		{append(append([]any{}, ctr...), "securityContext", "capabilities", "drop", 0), "ALL"},
	} {
		if got := get(t, doc, c.path...); got != c.want {
			t.Errorf("%v = %v (%T), want %v", c.path, got, got, c.want)
		}
	}
	sel := get(t, doc, "spec", "selector", "matchLabels").(map[string]any)
	labels := get(t, doc, "spec", "template", "metadata", "labels").(map[string]any)
	for k, v := range sel {
		if labels[k] != v {
			t.Errorf("selector %s=%v does not match the pod template's labels", k, v)
		}
	}
	var add []string
	for _, c := range get(t, doc, append(append([]any{}, ctr...), "securityContext", "capabilities", "add")...).([]any) {
		add = append(add, c.(string))
	}
	slices.Sort(add)
	if !slices.Equal(add, []string{"KILL", "SYS_PTRACE"}) {
		t.Errorf("capabilities.add = %v, want [KILL SYS_PTRACE]", add)
	}
	// The sockets come from the host, and every mount names a volume.
	vols := map[string]string{}
	for _, v := range get(t, doc, append(append([]any{}, spec...), "volumes")...).([]any) {
		vols[get(t, v, "name").(string)] = get(t, v, "hostPath", "path").(string)
	}
	mounts := map[string]string{}
	for _, m := range get(t, doc, append(append([]any{}, ctr...), "volumeMounts")...).([]any) {
		name := get(t, m, "name").(string)
		if _, ok := vols[name]; !ok {
			t.Errorf("volumeMount %s names no volume", name)
		}
		mounts[get(t, m, "mountPath").(string)] = vols[name]
	}
	if mounts["/var/run/nri"] != "/var/run/nri" || mounts["/run/lockbox"] != "/run/lockbox" {
		t.Errorf("mounts %v: want the host's /var/run/nri and /run/lockbox", mounts)
	}
	args := strings.Join(func() []string {
		var s []string
		for _, a := range get(t, doc, append(append([]any{}, ctr...), "args")...).([]any) {
			s = append(s, a.(string))
		}
		return s
	}(), " ")
	for _, want := range []string{"--agent-socket=/run/lockbox/agent.sock", "--nri-socket=/var/run/nri/nri.sock"} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %s", args, want)
		}
	}
}

// make install copies the binaries that exist in BIN, the two units with
// PREFIX's bin in ExecStart, and nothing else, under DESTDIR.
func TestMakeInstall(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed")
	}
	bin, dest := t.TempDir(), t.TempDir()
	for _, b := range []string{"lockbox", "lockbox-runtime", "containerd-shim-lockbox-v2"} { // no lockbox-nri
		if err := os.WriteFile(filepath.Join(bin, b), []byte("#!/bin/true\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("make", "-C", "..", "install", "BIN="+bin, "DESTDIR="+dest, "PREFIX=/opt/lb").CombinedOutput()
	if err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	got := map[string]os.FileMode{}
	err = filepath.WalkDir(dest, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dest, p)
		got["/"+rel] = fi.Mode().Perm()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]os.FileMode{
		"/opt/lb/bin/lockbox": 0o755, "/opt/lb/bin/lockbox-runtime": 0o755, "/opt/lb/bin/containerd-shim-lockbox-v2": 0o755,
		"/lib/systemd/system/lockbox-manager.service": 0o644, "/lib/systemd/system/lockbox-agent.service": 0o644,
	}
	if len(got) != len(want) {
		t.Errorf("installed %v, want %v", got, want)
	}
	for p, m := range want {
		if got[p] != m {
			t.Errorf("%s: mode %v, want %v", p, got[p], m)
		}
	}
	unit, err := os.ReadFile(filepath.Join(dest, "lib/systemd/system/lockbox-agent.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(unit, []byte("ExecStart=/opt/lb/bin/lockbox agent ")) || bytes.Contains(unit, []byte("/usr/local/bin")) {
		t.Errorf("installed unit does not run PREFIX's lockbox:\n%s", unit)
	}
	// Without make build first, install says so and installs nothing.
	out, err = exec.Command("make", "-C", "..", "install", "BIN="+t.TempDir(), "DESTDIR="+t.TempDir()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "run make build first") {
		t.Errorf("make install with no binaries: %v\n%s", err, out)
	}
}
