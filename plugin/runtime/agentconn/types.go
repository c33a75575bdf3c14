package agentconn

import "fmt"

// Container is the agent's view of a claiming container (api/agent's
// Container).
type Container struct {
	ID             string
	Service        string
	Pid            int
	Rootfs         string
	ReadonlyRootfs bool
	UIDMappings    []IDMapping
	GIDMappings    []IDMapping
	OS             string
	// Facts are what the adapter knows of the container that the container
	// cannot forge (api/agent's ContainerFacts); nil sends none.
	Facts *Facts
}

// Facts are the claim rules' facts as lockbox-runtime knows them
// (api/agent's ContainerFacts). lockbox-runtime never sees pod labels:
// a pod's LabelsKnown is always false on this wire.
type Facts struct {
	// Pod is the Kubernetes pod, nil when the container is known to be in
	// none.
	Pod *Pod
	// ContainerdNamespace and Image are "" when unknown.
	ContainerdNamespace string
	Image               string
}

// Copy returns a copy of f that shares nothing with it.
func (f Facts) Copy() *Facts {
	if f.Pod != nil {
		p := *f.Pod
		f.Pod = &p
	}
	return &f
}

// Pod is a Kubernetes pod as lockbox-runtime knows it.
type Pod struct {
	Namespace string
}

// IDMapping is one user-namespace mapping range.
type IDMapping struct {
	ContainerID, HostID, Size uint32
}

// Mount is one mount the agent prepared: FdIndex names the file that
// carries it, or is FdAttached when the agent attached it itself (as
// api/agent's MountPoint, whose helpers this package cannot link).
type Mount struct {
	Target  string
	FdIndex int
}

// FdAttached is the FdIndex of a mount the agent attached itself.
const FdAttached = -1

// Attached reports whether the agent attached m itself.
func (m Mount) Attached() bool { return m.FdIndex == FdAttached }

// Fd returns the index of m's file among nfiles files that came with the
// answer, and whether it names one (false when the agent attached m or the
// index is out of range).
func (m Mount) Fd(nfiles int) (int, bool) {
	return m.FdIndex, m.FdIndex >= 0 && m.FdIndex < nfiles
}

// Code is the agent's error code (api/agent's Error.Code).
type Code int32

// The codes of api/agent's Error.Code.
const (
	Unknown          Code = 0
	NotGranted       Code = 1
	Invalid          Code = 2
	PermissionDenied Code = 3
	NotFound         Code = 4
	Refused          Code = 5
)

var codeNames = [...]string{"UNKNOWN", "NOT_GRANTED", "INVALID", "PERMISSION_DENIED", "NOT_FOUND", "REFUSED"}

func (c Code) String() string {
	if c >= 0 && int(c) < len(codeNames) {
		return codeNames[c]
	}
	return fmt.Sprintf("%d", int32(c))
}

// Error is a failure the agent reported. It reads like agent/localapi's
// Error, so that a user sees the same message whichever client asked.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("agent: %s: %s", e.Code, e.Message)
}

// Process names a container's process in a release: its pid as the
// agent's /proc numbers it and its start time (clock ticks since boot,
// /proc/<pid>/stat field 22). Zero values mean unknown.
type Process struct {
	Pid   int
	Start uint64
}
