// Package busybox builds throwaway containers for root tests: a busybox
// rootfs and a runc bundle around it, plus a small runc driver with its own
// state directory. It is test support only: nothing outside _test.go files
// and test drivers may import it. It never touches the host beyond the
// directories it is given and the runc containers it starts.
package busybox

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// BusyboxPath is the static busybox copied into every rootfs.
var BusyboxPath = "/bin/busybox"

// Rootfs builds a busybox rootfs in dir (created if missing): /bin with
// busybox and its applet links, /etc/passwd and /etc/group (root, a user
// "user" 1000:1000, nobody), and empty /run, /tmp, /proc, /sys, /dev, /root.
func Rootfs(dir string) error {
	for _, d := range []string{"bin", "etc", "run", "tmp", "proc", "sys", "dev", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return fmt.Errorf("busybox rootfs: %w", err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		return fmt.Errorf("busybox rootfs: %w", err)
	}
	bb, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return fmt.Errorf("busybox rootfs: read %s: %w", BusyboxPath, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), bb, 0o755); err != nil {
		return fmt.Errorf("busybox rootfs: %w", err)
	}
	if out, err := exec.Command("chroot", dir, "/bin/busybox", "--install", "-s", "/bin").CombinedOutput(); err != nil {
		return fmt.Errorf("busybox rootfs: install applets: %v: %s", err, out)
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
		"etc/group":  "root:x:0:\nuser:x:1000:\nnobody:x:65534:\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return fmt.Errorf("busybox rootfs: %w", err)
		}
	}
	return nil
}

// Options shape a bundle's config.json.
type Options struct {
	// Args is the container's command; default "sleep 3600".
	Args []string
	Env  []string
	// User is the process's user inside the container; default 0:0.
	User specs.User
	// ReadonlyRootfs makes root.readonly true.
	ReadonlyRootfs bool
	// UIDMappings and GIDMappings, when set, put the container in a new user
	// namespace; the rootfs is then chowned so that the container's root
	// owns it, and the bundle dir and its parent are made 0755 so that the
	// container's root can reach them.
	UIDMappings []specs.LinuxIDMapping
	GIDMappings []specs.LinuxIDMapping
	// Mounts are appended to the default ones.
	Mounts      []specs.Mount
	Annotations map[string]string
	Hooks       *specs.Hooks
}

// Bundle is an OCI bundle on disk.
type Bundle struct {
	Dir    string
	Rootfs string // Dir/rootfs
	Spec   *specs.Spec
}

// NewBundle builds a busybox rootfs and a config.json in dir. The container
// shares the host's network (no network namespace), so it needs no CNI.
func NewBundle(dir string, o Options) (*Bundle, error) {
	b := &Bundle{Dir: dir, Rootfs: filepath.Join(dir, "rootfs")}
	if err := Rootfs(b.Rootfs); err != nil {
		return nil, err
	}
	b.Spec = Spec(o)
	if len(o.UIDMappings) > 0 {
		uid, gid := hostRoot(o.UIDMappings), hostRoot(o.GIDMappings)
		err := filepath.WalkDir(b.Rootfs, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, uid, gid)
		})
		if err != nil {
			return nil, fmt.Errorf("busybox bundle: chown rootfs: %w", err)
		}
		// The container's root must reach the bundle: open dir and its
		// parent to others (t.TempDir makes both 0700).
		for _, d := range []string{dir, filepath.Dir(dir)} {
			if err := os.Chmod(d, 0o755); err != nil {
				return nil, err
			}
		}
	}
	return b, b.WriteSpec()
}

func hostRoot(ms []specs.LinuxIDMapping) int {
	for _, m := range ms {
		if m.ContainerID == 0 {
			return int(m.HostID)
		}
	}
	return 0
}

// WriteSpec writes b.Spec to b.Dir/config.json.
func (b *Bundle) WriteSpec() error {
	data, err := json.MarshalIndent(b.Spec, "", "\t")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(b.Dir, "config.json"), data, 0o644)
}

// Spec returns the config of a busybox container shaped by o, close to what
// `runc spec` writes, with the rootfs at "rootfs".
func Spec(o Options) *specs.Spec {
	args := o.Args
	if len(args) == 0 {
		args = []string{"sleep", "3600"}
	}
	env := append([]string{"PATH=/bin:/sbin:/usr/bin:/usr/sbin", "HOME=/root"}, o.Env...)
	caps := []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
	userns := len(o.UIDMappings) > 0
	s := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			User: o.User,
			Args: args,
			Env:  env,
			Cwd:  "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
			NoNewPrivileges: true,
		},
		Root:        &specs.Root{Path: "rootfs", Readonly: o.ReadonlyRootfs},
		Hostname:    "busybox",
		Annotations: o.Annotations,
		Hooks:       o.Hooks,
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace}, {Type: specs.MountNamespace},
			},
			MaskedPaths: []string{
				"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
			},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
	if userns {
		// sysfs can only be mounted by the owner of the network namespace;
		// with the host's network, bind the host's /sys read-only instead.
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/sys", Type: "none", Source: "/sys", Options: []string{"rbind", "nosuid", "noexec", "nodev", "ro"}})
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		s.Linux.UIDMappings = o.UIDMappings
		s.Linux.GIDMappings = o.GIDMappings
	} else {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}})
	}
	s.Mounts = append(s.Mounts, o.Mounts...)
	return s
}
