// Package agentsocket holds where the agent's local API listens unless told
// otherwise: the one home of that path for the agent (agent/localapi) and
// for the adapters that only need to find it (the shim, lockbox-runtime).
// It imports nothing, so an adapter that needs the path does not link the
// agent's API: linked into containerd-shim-lockbox-v2 and never called,
// that API cost the machine 1.2 ms of CPU per container
// (docs/performance.md).
package agentsocket
