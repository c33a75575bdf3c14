package sysmon

import "errors"

// ErrNotFound is returned when sysmon's thread cannot be told.
var ErrNotFound = errors.New("the Go runtime's system monitor thread was not found")
