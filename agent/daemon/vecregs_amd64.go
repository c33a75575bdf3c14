package daemon

import "golang.org/x/sys/cpu"

// haveAVX is read by vecregs_amd64.s.
//
//lint:ignore U1000 read by the assembly
var haveAVX = cpu.X86.HasAVX

// clearVectorRegisters zeroes the calling thread's vector registers (every
// YMM register with AVX, XMM0-15 without). See scrub.go.
//
//go:noescape
func clearVectorRegisters()
