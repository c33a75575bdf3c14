// Package secretmem holds secret bytes outside the Go heap: each Buffer is
// its own anonymous mapping, locked into RAM (never swapped), excluded from
// core dumps, and overwritten with zeros before it is unmapped. The garbage
// collector never copies it, so zeroing it really removes the bytes.
//
// It also hardens the process (Harden: not dumpable, no core files) and
// offers Zero for the heap copies that decoding leaves behind.
//
// It knows nothing of grants, gRPC or mounts.
package secretmem
