//go:build linux

package harness

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Flavor is which containerd a test runs against.
type Flavor string

const (
	// V2 is containerd v2.4.2 built by hack/deps.sh.
	V2 Flavor = "v2"
	// V16 is Debian's containerd 1.6 (no NRI).
	V16 Flavor = "1.6"
)

// Options configure one containerd.
type Options struct {
	Flavor Flavor
	// CRI enables the CRI plugin (off by default: it is slow to start and
	// most tests use ctr or the Go client).
	CRI bool
	// RuntimeBinary, when set with CRI, adds a CRI runtime handler
	// "lockbox" whose runc shim runs this binary, with the lockbox.service
	// pod and container annotations allowed into the OCI spec.
	RuntimeBinary string
	// ShimHandler, when set with CRI, adds a CRI runtime handler of that
	// name whose runtime type is io.containerd.lockbox.v2 (the shim found
	// on ShimDir), with runc state in RuncRoot and the lockbox.service pod
	// and container annotations allowed into the OCI spec (containerd's CRI
	// copies no other annotation there, and the spec is all the shim sees).
	ShimHandler string
	// ExtraConfig is appended to containerd's config file (whole TOML
	// tables, for instance one more runtime handler).
	ExtraConfig string
	// NRI enables containerd's NRI with its socket in the temp dir (v2 only).
	NRI bool
	// NRIRequired lists NRI plugins without which no CRI container is
	// created (NRI's default validator, containerd >= 2.2).
	NRIRequired []string
	// NRIValidator enables NRI's default validator even without
	// NRIRequired: it then refuses only the containers whose pod names a
	// missing plugin in the required-plugins.noderesource.dev annotation.
	NRIValidator bool
	// NRITolerateAnnotation is the validator's
	// tolerate_missing_plugins_annotation: a pod annotated with it set to
	// true skips every required-plugins check.
	NRITolerateAnnotation string
	// Env is added to containerd's environment (and so to its shims').
	Env []string
	// StateOnTmpfs puts containerd's state (the bundles), runc's state and
	// the IO fifos on a tmpfs each, as /run/containerd is on a node; the
	// temp dir holding them is on the disk.
	StateOnTmpfs bool
	// ShimDir, when set, is put first on containerd's PATH, where it finds
	// the shim of a runtime type (containerd-shim-lockbox-v2 for
	// io.containerd.lockbox.v2).
	ShimDir string
}

// Containerd is one running containerd.
type Containerd struct {
	Flavor    Flavor
	Dir       string
	Address   string
	NRISocket string
	// RuncRoot and FifoDir keep runc state and IO fifos in Dir.
	RuncRoot string
	FifoDir  string
	CtrPath  string
	LogPath  string

	t       testing.TB
	cmd     *exec.Cmd
	waitErr chan error
}

// StartContainerd starts a containerd on a fresh temp dir and stops it, its
// shims and their mounts when the test ends.
func StartContainerd(t testing.TB, opts Options) *Containerd {
	t.Helper()
	if opts.Flavor == "" {
		opts.Flavor = V2
	}
	var bin, ctr, shimDir string
	switch opts.Flavor {
	case V2:
		shimDir = ToolsDir()
		bin = need(t, filepath.Join(shimDir, "containerd"), "make deps")
		ctr = need(t, filepath.Join(shimDir, "ctr"), "make deps")
		need(t, filepath.Join(shimDir, "containerd-shim-runc-v2"), "make deps")
	case V16:
		shimDir = "/usr/bin"
		bin = need(t, "/usr/bin/containerd", "make deps")
		ctr = need(t, "/usr/bin/ctr", "make deps")
		need(t, "/usr/bin/containerd-shim-runc-v2", "make deps")
	default:
		t.Fatalf("unknown containerd flavor %q", opts.Flavor)
	}
	// Unix socket paths are limited to 108 bytes: keep the dir short.
	dir, err := os.MkdirTemp("/tmp", "lbx-ctd-")
	if err != nil {
		t.Fatal(err)
	}
	// A user-namespaced container's root must be able to reach its rootfs.
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	c := &Containerd{
		Flavor:    opts.Flavor,
		Dir:       dir,
		Address:   filepath.Join(dir, "c.sock"),
		NRISocket: filepath.Join(dir, "nri.sock"),
		RuncRoot:  filepath.Join(dir, "runc"),
		FifoDir:   filepath.Join(dir, "fifo"),
		CtrPath:   ctr,
		LogPath:   filepath.Join(dir, "containerd.log"),
		t:         t,
	}
	t.Cleanup(func() {
		c.stop()
		if opts.StateOnTmpfs {
			// stop unmounts them only when containerd ran.
			UnmountUnder(t, dir)
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	if opts.StateOnTmpfs {
		for _, d := range []string{"state", "runc", "fifo"} {
			p := filepath.Join(dir, d)
			if err := os.Mkdir(p, 0o711); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Mount("tmpfs", p, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode=0711"); err != nil {
				t.Fatalf("mount a tmpfs on %s: %v", p, err)
			}
		}
	}
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(c.config(opts)), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(c.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()

	cmd := exec.Command(bin, "--config", cfg)
	// The shim is found on PATH: put the matching one first.
	path := shimDir + ":" + ToolsDir() + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	if opts.ShimDir != "" {
		path = opts.ShimDir + ":" + path
	}
	cmd.Env = append(os.Environ(), "PATH="+path)
	cmd.Env = append(cmd.Env, opts.Env...)
	// No Pdeathsig: it fires when the forking OS thread exits, and the
	// attach code in this process deliberately ends locked threads.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, pw := io.Pipe()
	cmd.Stdout = logf
	cmd.Stderr = io.MultiWriter(logf, pw)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	c.cmd = cmd
	booted := make(chan struct{})
	exited := make(chan error, 1)
	go func() {
		s := bufio.NewScanner(pr)
		s.Buffer(make([]byte, 64<<10), 1<<20)
		once := false
		for s.Scan() {
			if !once && strings.Contains(s.Text(), "containerd successfully booted") {
				close(booted)
				once = true
			}
		}
		io.Copy(io.Discard, pr)
	}()
	go func() { exited <- cmd.Wait(); pw.Close() }()
	c.waitErr = exited
	select {
	case <-booted:
	case err := <-exited:
		c.cmd = nil
		t.Fatalf("containerd exited during start (%v); log:\n%s", err, tail(c.LogPath))
	case <-time.After(60 * time.Second):
		t.Fatalf("containerd did not boot in 60s; log:\n%s", tail(c.LogPath))
	}
	return c
}

func (c *Containerd) config(o Options) string {
	var b strings.Builder
	q := strconv.Quote
	if o.Flavor == V16 {
		fmt.Fprintf(&b, "version = 2\nroot = %s\nstate = %s\n", q(c.Dir+"/root"), q(c.Dir+"/state"))
		fmt.Fprintf(&b, "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n")
		fmt.Fprintf(&b, "[grpc]\n  address = %s\n[ttrpc]\n  address = %s\n", q(c.Address), q(c.Address+".ttrpc"))
		fmt.Fprintf(&b, "[plugins.\"io.containerd.internal.v1.opt\"]\n  path = %s\n", q(c.Dir+"/opt"))
		return b.String()
	}
	fmt.Fprintf(&b, "version = 3\nroot = %s\nstate = %s\n", q(c.Dir+"/root"), q(c.Dir+"/state"))
	if !o.CRI {
		b.WriteString(`disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images", "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.sandbox.controller.v1.shim"]` + "\n")
	}
	fmt.Fprintf(&b, "[grpc]\n  address = %s\n[ttrpc]\n  address = %s\n", q(c.Address), q(c.Address+".ttrpc"))
	fmt.Fprintf(&b, "[plugins.'io.containerd.internal.v1.opt']\n  path = %s\n", q(c.Dir+"/opt"))
	fmt.Fprintf(&b, "[plugins.'io.containerd.nri.v1.nri']\n  disable = %t\n  socket_path = %s\n  plugin_path = %s\n  plugin_config_path = %s\n",
		!o.NRI, q(c.NRISocket), q(c.Dir+"/nri/plugins"), q(c.Dir+"/nri/conf.d"))
	if len(o.NRIRequired) > 0 || o.NRIValidator || o.NRITolerateAnnotation != "" {
		var names []string
		for _, n := range o.NRIRequired {
			names = append(names, q(n))
		}
		fmt.Fprintf(&b, "[plugins.'io.containerd.nri.v1.nri'.default_validator]\n  enable = true\n  required_plugins = [%s]\n", strings.Join(names, ", "))
		if o.NRITolerateAnnotation != "" {
			fmt.Fprintf(&b, "  tolerate_missing_plugins_annotation = %s\n", q(o.NRITolerateAnnotation))
		}
	}
	if o.CRI {
		fmt.Fprintf(&b, "[plugins.'io.containerd.cri.v1.runtime']\n  restrict_oom_score_adj = true\n")
		fmt.Fprintf(&b, "[plugins.'io.containerd.cri.v1.runtime'.containerd]\n  default_runtime_name = 'runc'\n")
		fmt.Fprintf(&b, "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\n  runtime_type = 'io.containerd.runc.v2'\n")
		fmt.Fprintf(&b, "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]\n  Root = %s\n", q(c.RuncRoot))
		if o.RuntimeBinary != "" {
			fmt.Fprintf(&b, "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.lockbox]\n  runtime_type = 'io.containerd.runc.v2'\n  pod_annotations = ['lockbox.service']\n  container_annotations = ['lockbox.service']\n")
			fmt.Fprintf(&b, "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.lockbox.options]\n  BinaryName = %s\n  Root = %s\n", q(o.RuntimeBinary), q(c.RuncRoot))
		}
		if o.ShimHandler != "" {
			h := "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes." + q(o.ShimHandler)
			fmt.Fprintf(&b, "%s]\n  runtime_type = 'io.containerd.lockbox.v2'\n  pod_annotations = ['lockbox.service']\n  container_annotations = ['lockbox.service']\n", h)
			fmt.Fprintf(&b, "%s.options]\n  Root = %s\n", h, q(c.RuncRoot))
		}
		fmt.Fprintf(&b, "[plugins.'io.containerd.cri.v1.runtime'.cni]\n  bin_dirs = [%s]\n  conf_dir = %s\n", q(c.Dir+"/cni/bin"), q(c.Dir+"/cni/conf"))
	}
	b.WriteString(o.ExtraConfig)
	return b.String()
}

// Pid is containerd's process ID.
func (c *Containerd) Pid() int {
	if c.cmd == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// Ctr runs ctr against this containerd in namespace ns and returns its
// stdout (a container's output under "ctr run"). On failure the error
// carries stderr, where ctr and the runtime say why.
func (c *Containerd) Ctr(ctx context.Context, ns string, args ...string) (string, error) {
	full := append([]string{"--address", c.Address, "--namespace", ns}, args...)
	cmd := exec.CommandContext(ctx, c.CtrPath, full...)
	var out, errb bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		return out.String(), &CtrError{Args: args, Err: err, Stderr: stripWarnings(errb.String())}
	}
	return out.String(), nil
}

// CtrError is a failed ctr command.
type CtrError struct {
	Args   []string
	Err    error
	Stderr string
}

func (e *CtrError) Error() string {
	return fmt.Sprintf("ctr %s: %v: %s", strings.Join(e.Args, " "), e.Err, e.Stderr)
}

func (e *CtrError) Unwrap() error { return e.Err }

// stripWarnings drops containerd 2.x's cgroup v1 deprecation line, which
// ctr prints on every call on this machine.
func stripWarnings(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "level=warning") && strings.Contains(l, "DEPRECATION") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}

// Import builds an image with cfg and imports it into namespace ns.
func (c *Containerd) Import(ns string, cfg ImageConfig) {
	c.t.Helper()
	tarball := filepath.Join(c.Dir, "image-"+strconv.Itoa(int(time.Now().UnixNano()))+".tar")
	if err := BuildImage(tarball, cfg); err != nil {
		c.t.Fatalf("build image %s: %v", cfg.Name, err)
	}
	defer os.Remove(tarball)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := c.Ctr(ctx, ns, "images", "import", tarball); err != nil {
		c.t.Fatalf("import %s: %v\n%s", cfg.Name, err, out)
	}
}

// RunArgs is the start of a "ctr run" command line that keeps runc state
// and fifos in the temp dir and uses runtimeBinary (lockbox-runtime, or runc
// for a baseline) as the shim's runc.
func (c *Containerd) RunArgs(runtimeBinary string) []string {
	return []string{"run", "--rm", "--runc-binary", runtimeBinary, "--runc-root", c.RuncRoot, "--fifo-dir", c.FifoDir}
}

// ShimRunArgs is the start of a "ctr run" command line that runs the
// container under runtime type runtime (a shim containerd finds on its
// PATH, or an absolute path to one) with fifos in the temp dir. ctr passes
// no runc options (--runc-root) to a runtime type other than runc's: the
// shim keeps runc state in runc's default root for the namespace.
func (c *Containerd) ShimRunArgs(runtime string) []string {
	return []string{"run", "--rm", "--runtime", runtime, "--fifo-dir", c.FifoDir}
}

func (c *Containerd) stop() {
	if c.cmd == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Containers first, while containerd can still tear them down cleanly.
	if out, err := c.Ctr(ctx, "default", "namespaces", "ls", "-q"); err == nil {
		for _, ns := range strings.Fields(out) {
			c.removeAll(ctx, ns)
		}
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.waitErr:
	case <-time.After(20 * time.Second):
		c.cmd.Process.Kill()
		<-c.waitErr
	}
	c.cmd = nil
	// Shims outlive containerd by design; kill the ones serving ours.
	for _, pid := range shimsOf(c.Address) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	UnmountUnder(c.t, c.Dir)
}

func (c *Containerd) removeAll(ctx context.Context, ns string) {
	if out, err := c.Ctr(ctx, ns, "tasks", "ls", "-q"); err == nil {
		for _, id := range strings.Fields(out) {
			c.Ctr(ctx, ns, "tasks", "kill", "-s", "SIGKILL", id)
			c.Ctr(ctx, ns, "tasks", "delete", "--force", id)
		}
	}
	if out, err := c.Ctr(ctx, ns, "containers", "ls", "-q"); err == nil {
		for _, id := range strings.Fields(out) {
			c.Ctr(ctx, ns, "containers", "delete", id)
		}
	}
}

// Shims lists the pids of the shims serving this containerd.
func (c *Containerd) Shims() []int { return shimsOf(c.Address) }

// shimsOf lists the pids of shims whose -address is addr.
func shimsOf(addr string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || !strings.Contains(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-address" && args[i+1] == addr {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// UnmountUnder lazily unmounts every mount at or below dir in this mount
// namespace, deepest first.
func UnmountUnder(t testing.TB, dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Errorf("mountinfo: %v", err)
		return
	}
	var targets []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			targets = append(targets, mp)
		}
	}
	for i := len(targets) - 1; i >= 0; i-- {
		if err := unix.Unmount(targets[i], unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			t.Errorf("unmount %s: %v", targets[i], err)
		}
	}
}

// unescapeMount undoes mountinfo's octal escapes (\040 for space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}
