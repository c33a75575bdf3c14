// Package shim is containerd-shim-lockbox-v2, the runtime shim v2 of
// runtime type io.containerd.lockbox.v2 (containerd 2.x, Linux): containerd
// v2.4.2's own runc shim (its manager and task service, run by pkg/shim)
// with a task service wrapped around the runc one. The wrapper gives a
// container that claims a service (api/claim) its secrets between the
// runc create and the start, with no exec on that path. Beside runc's
// create it asks the agent (agent/localapi's socket, through
// lockbox-runtime's hand-encoded client agentconn) to build the secrets
// and hand them over as detached mounts (a before-create Prepare); once
// runc's create returns it attaches them into the container's mount
// namespace by its init's pidfd (linux.AttachHandoversInto) and tells the
// agent the container's process (Bind), whose answer Start waits for (a
// container the agent cannot watch is killed, never started). It
// has the agent release the secrets when the container is deleted, or,
// from the record it keeps in the bundle, when the shim manager's Stop
// cleans up after a shim that died. The agent's own exit watch wipes the
// secrets when the container stops, whether or not anything deletes it.
//
// It never reads a secret: the agent builds the mount, and the shim holds
// only the detached mounts' fds, from the agent's answer to the attach.
// It copies no containerd code beyond the registration of the task
// plugin, and it must not import the runc shim's task/plugin package (its
// registration of the same plugin ID panics).
package shim
