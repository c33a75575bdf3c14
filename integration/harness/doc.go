// Package harness runs the real parts Lockbox's integration tests and
// benchmarks need, each in its own temp dir: a containerd (v2 from
// /opt/lockbox/tools or Debian's 1.6) with its own config, root, state and
// sockets; a busybox OCI image built locally and imported; and the lockbox
// manager and agent as subprocesses. Everything it starts it stops by PID,
// and everything it mounts it unmounts, from t.Cleanup.
//
// A missing binary is a test failure that says to run "make deps" (or "make
// build" for Lockbox's own), never a skip.
//
// It holds no test logic and touches nothing outside the temp dirs it is
// given, except what containerd itself insists on (/run/containerd/s for
// shim sockets).
package harness
