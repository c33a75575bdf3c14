// Package bench holds Lockbox's benchmark drivers. They run real parts
// (containerd, runc, the tmpfs mounter) and report ratios against a
// baseline measured in the same run, alternating, never absolute times
// compared with a constant.
package bench
