package mounter

import (
	"io/fs"

	"github.com/lockbox-project/lockbox/api/claim"
)

// OS is the platform of the container a plan is for.
type OS string

const (
	Linux   OS = "linux"
	Windows OS = "windows"
)

// LinuxSecretsDir is where a Linux container finds its secrets by default;
// relative targets are under it (the claim contract's claim.SecretsDir).
const LinuxSecretsDir = claim.SecretsDir

// Grant is one secret reference as the agent holds it: what the operator
// asked for, not yet validated against a platform.
type Grant struct {
	SecretID   string
	SecretName string
	// Target is the operator's target: empty (the secret's name), relative
	// (under the platform's secrets directory) or absolute.
	Target string
	// UID and GID are decimal strings; empty means the platform default.
	UID  string
	GID  string
	Mode uint32 // 0 means the platform default
	Size int64  // length of the secret's data
	// Signal is the signal (api/validation.ParseSignal's syntax) the agent
	// sends the container's init after a live update changed this grant's
	// file; empty sends none. Plans carry it to File; mounters ignore it.
	Signal string
}

// File is one validated secret file of a plan.
type File struct {
	SecretID   string
	SecretName string
	// Name is the file's name in the mounter's private storage: the secret
	// ID, so that two targets with the same base name cannot collide, with
	// "~N" appended to the N-th (N >= 2) grant of the same secret in one
	// plan. It is a single path element, unique within the plan.
	Name string
	// Target is absolute and clean, in the container's path syntax.
	Target string
	UID    uint32
	GID    uint32
	Mode   fs.FileMode
	Size   int64
	// Signal is the grant's Signal: the agent's, never the mounter's.
	Signal string
}

// Plan is what one container gets. It is the only input a Mounter needs
// besides the secret bytes.
type Plan struct {
	OS    OS
	Files []File
	// Size is the sum of the files' sizes.
	Size int64
	// Owner is the ID of the container the plan is built for, set by the
	// agent. The Linux mounter writes it into the mark it leaves on its
	// mounts, so that an agent restarted while the container runs takes
	// back that container's mounts and no other's (linux Recover). Empty
	// builds a mount no Recover takes back.
	Owner string
}

// LinuxMountpointSource is the agent's empty mountpoint file on the host
// (the claim contract's claim.MountpointSource): adapters bind it at the
// targets of a container whose root the agent cannot write, and the Linux
// mounter attaches secrets over such binds and over no other mount.
const LinuxMountpointSource = claim.MountpointSource
