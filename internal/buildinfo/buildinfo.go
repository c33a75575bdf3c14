// Package buildinfo says which build of Lockbox is running: the release
// version (stamped at link time), the VCS commit the Go toolchain records,
// the Go version and the platform. The CLI prints it (lockbox version) and
// the managers report it through the Admin API. It reads nothing else.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// version is the release, set at link time:
//
//	go build -ldflags "-X github.com/lockbox-project/lockbox/internal/buildinfo.version=v1.2.3"
//
// Unset, the module's version is used (a go install of a tagged module),
// else "dev". commit may be set the same way (….buildinfo.commit=SHA) for
// builds without VCS stamping (-buildvcs=false, a source tarball); the
// toolchain's vcs.revision wins when there is one.
var version, commit string

// Info describes one build.
type Info struct {
	Version   string
	Commit    string // VCS revision, "" when the build recorded none
	Modified  bool   // the working tree had uncommitted changes
	BuildTime string // commit time (RFC 3339) as recorded by the toolchain
	GoVersion string
	OS        string
	Arch      string
}

// Get returns this binary's build information.
func Get() Info {
	i := Info{Version: version, Commit: commit, GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	bi, ok := debug.ReadBuildInfo()
	if ok {
		if i.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				i.Commit = s.Value
			case "vcs.modified":
				i.Modified = s.Value == "true"
			case "vcs.time":
				i.BuildTime = s.Value
			}
		}
	}
	if i.Version == "" {
		i.Version = "dev"
	}
	return i
}

// ShortCommit is the commit as docker version shows it: 7 hex digits, and
// "-dirty" for a modified tree.
func (i Info) ShortCommit() string {
	c := i.Commit
	if len(c) > 7 {
		c = c[:7]
	}
	if c == "" {
		return "unknown"
	}
	if i.Modified {
		c += "-dirty"
	}
	return c
}
