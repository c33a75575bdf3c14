//go:build !linux

package manager

import "errors"

// memFile needs memfd: under autolock the embedded etcd member's key never
// reaches the disk, which only Linux offers here.
type memFile struct{}

func newMemFile(string, []byte) (*memFile, error) {
	return nil, errors.New("manager: --autolock with an embedded etcd member needs Linux (memfd); use --etcd-endpoints or run without --autolock")
}

func (*memFile) path() string         { return "" }
func (*memFile) replace([]byte) error { return nil }
func (*memFile) close()               {}
