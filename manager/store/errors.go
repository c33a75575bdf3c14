package store

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel kinds a caller branches on with errors.Is. The errors the store
// returns wrap one of them and carry a message a user can act on.
var (
	// ErrNotFound: no object matches the given ID, ID prefix or name.
	ErrNotFound = errors.New("not found")
	// ErrAmbiguous: an ID prefix matches more than one object.
	ErrAmbiguous = errors.New("ambiguous reference")
	// ErrNameConflict: another object of the same kind has that name.
	ErrNameConflict = errors.New("name conflict")
	// ErrInUse: a secret is referenced by at least one service.
	ErrInUse = errors.New("in use")
	// ErrVersionConflict: the object changed since the version the caller read.
	ErrVersionConflict = errors.New("version conflict")
	// ErrUnknownSecret: a service references a secret that does not exist.
	ErrUnknownSecret = errors.New("unknown secret")
	// ErrInvalid: the change is not allowed (renames, data changes).
	ErrInvalid = errors.New("invalid change")
	// ErrCompacted: a watch asked for revisions etcd no longer keeps; take a
	// new Snapshot.
	ErrCompacted = errors.New("revision compacted")
	// ErrExists: the record is created once and exists already (the
	// cluster state).
	ErrExists = errors.New("already exists")
	// ErrRevoked: the node is revoked; nothing more is recorded for it.
	ErrRevoked = errors.New("revoked")
)

// Error is a store error: a kind (one of the sentinels) and a message.
type Error struct {
	Kind error
	Msg  string
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Kind }

func errorf(kind error, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// InUseError says which services keep a secret from being removed.
type InUseError struct {
	Secret   string
	Services []string // names, sorted
}

func (e *InUseError) Error() string {
	if len(e.Services) == 1 {
		return fmt.Sprintf("secret '%s' is in use by the following service: %s", e.Secret, e.Services[0])
	}
	return fmt.Sprintf("secret '%s' is in use by the following services: %s", e.Secret, strings.Join(e.Services, ", "))
}

func (e *InUseError) Unwrap() error { return ErrInUse }
