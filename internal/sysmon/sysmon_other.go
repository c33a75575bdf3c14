//go:build !linux

package sysmon

import (
	"errors"
	"time"
)

// Relax is Linux's only: elsewhere there is no per-thread timer slack to
// set.
func Relax(time.Duration) (int, error) { return 0, errors.ErrUnsupported }
