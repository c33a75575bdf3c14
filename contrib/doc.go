// Package contrib holds no Go code: its directories are the files an
// operator installs beside the binaries (systemd units, Kubernetes
// manifests). Its tests check them, so that they cannot drift from what the
// daemons need.
package contrib
