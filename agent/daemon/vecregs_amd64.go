package daemon

import "golang.org/x/sys/cpu"

var haveAVX = cpu.X86.HasAVX

// clearVectorRegisters zeroes the calling thread's vector registers (every
// YMM register with AVX, XMM0-15 without). See scrub.go.
//
//go:noescape
func clearVectorRegisters()
