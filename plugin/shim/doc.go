// Package shim is containerd-shim-lockbox-v2, the runtime shim v2 of
// runtime type io.containerd.lockbox.v2 (containerd 2.x, Linux): containerd
// v2.4.2's own runc shim (its manager and task service, run by pkg/shim)
// with a task service wrapped around the runc one. The wrapper gives a
// container that claims a service (api/claim) its secrets between the
// runc create and the start, with no exec on that path: it asks the agent
// (agent/localapi's socket, through lockbox-runtime's hand-encoded client
// agentconn) to attach the tmpfs into the container by its init pid, and
// has the agent release it when the container is deleted, or, from the
// record it keeps in the bundle, when the shim manager's Stop cleans up
// after a shim that died. The agent's own exit watch wipes the secrets
// when the container stops, whether or not anything deletes it.
//
// It holds no secret and never reads one: the agent builds and attaches the
// mount. It copies no containerd code beyond the registration of the task
// plugin, and it must not import the runc shim's task/plugin package (its
// registration of the same plugin ID panics).
package shim
