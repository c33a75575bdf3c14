//go:build !windows

package agentsocket

// Default is the agent's socket unless told otherwise.
const Default = "/run/lockbox/agent.sock"
