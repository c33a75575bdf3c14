// Package atomicfile writes files so that a crash or a failed write leaves
// either the old content or the new, never a mix or a truncated file: the
// data goes to a temp file in the same directory, is synced, and only then
// takes the final name (a rename, or a link that never replaces).
//
// It is the one atomic write of the tree (agent credentials, manager state,
// certificates, key files). It knows nothing of what it writes; callers
// zero their buffers.
package atomicfile
