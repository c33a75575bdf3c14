package sysmon

import "errors"

// ErrNotFound is returned when no single thread looked like sysmon.
var ErrNotFound = errors.New("the Go runtime's system monitor thread was not found")
