// Package shimproxy is containerd-shim-lockbox-v1, the runtime shim v2 of
// runtime type io.containerd.lockbox.v1: a proxy in front of the
// platform's own runtime shim (containerd-shim-runhcs-v1 on Windows,
// containerd-shim-runc-v2 on Linux, where it runs in CI).
//
// hcsshim's runhcs shim is a main package over internal packages, so it
// cannot be composed in-process the way plugin/shim composes the runc
// shim. The proxy's start runs the inner shim's own start (same flags,
// same bundle, same bootstrap parameters) and records the address it
// prints in the bundle; its serving process forwards every task API call
// to the inner shim over ttrpc (task API version 2 or 3, as the inner
// shim announced), and intercepts:
//
//   - Create: reads the claim from the bundle (plugin/runtime/hotpath),
//     does the platform's part (platform_linux.go: mountpoints in the spec
//     and an attach by the init's pid; platform_windows.go: the agent
//     links the targets into the mounted layers, and the spec gets the
//     read-only internal secrets mount), and fails closed: a claim that
//     cannot be served takes the container back (kill, wait, delete in
//     the inner shim) and the error names the service;
//   - the exit (a Wait on the inner shim) and Delete: release, from the
//     record in the bundle, idempotently;
//   - Shutdown: ends the inner shim and the proxy once no task is left.
//
// The manager's Stop (the shim's delete, a separate process run after
// every delete and after a proxy that died) takes the task out of an
// inner shim that still has it, runs the inner shim's delete, and
// releases from the record.
//
// It holds no secret and never reads one: the agent builds and places
// them. It talks to the agent only through agent/localapi, and imports
// windows only for the layout of the agent's secrets directories
// (windows.MountSource). It must not import plugin/shim (that is the
// runc shim with its task service compiled in) or anything of the
// control plane.
package shimproxy
