// Package benchinfo prints the machine a benchmark's figures came from:
// its core count, GOMAXPROCS and load average, one line, beside the
// figures. Every benchmark driver in the tree calls it where it reports,
// so that a figure copied into docs/performance.md carries the load it was
// measured under (see bench/README.md).
//
// It holds no measurement and no baseline of its own, and must not be
// imported by anything but tests and benchmarks.
package benchinfo
