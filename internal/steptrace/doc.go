// Package steptrace appends timestamped step lines for the phase
// benchmark (bench/shim_phases_test.go): "<container id> <step>
// <CLOCK_MONOTONIC ns>", one write per line, to the file Env names. The
// shim and the agent both write there, so that one benchmark run splits a
// claim's milliseconds across both processes on one clock.
//
// It is off unless Env is set in the process's environment when it
// starts: then every step costs a nil check. Lines carry container IDs and
// step names only, never anything of a secret. It must not import
// anything of Lockbox's.
package steptrace

// Env names the file trace lines are appended to. Only the phase
// benchmark sets it.
const Env = "LOCKBOX_SHIM_TRACE"
