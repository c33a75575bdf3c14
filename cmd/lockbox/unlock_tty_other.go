//go:build !linux

package main

import (
	"bufio"
	"os"
)

// Off Linux the key is read with echo on; pipe it in to keep it off screen.
func isTerminal(*os.File) bool { return false }

func readNoEcho(f *os.File) (string, error) { return bufio.NewReader(f).ReadString('\n') }
