package mounter

import "errors"

// newWindowsPlan validates grants for a Windows container.
func newWindowsPlan(grants []Grant) (*Plan, error) {
	return nil, errors.New("windows plans: not implemented")
}
