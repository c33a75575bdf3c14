// Package errdefs holds the agent's domain errors: the kinds of refusal a
// caller of the agent can act on, independent of any wire. The agent
// returns them; the local API maps them onto its wire codes once, at its
// edge (agent/localapi), as containerd's errdefs and errgrpc do.
//
// It imports only the standard library, and never holds secret data: only
// what a message to an operator needs.
package errdefs

import (
	"errors"
	"fmt"
)

// Kind is what went wrong, as a caller branches on it.
type Kind int

const (
	// Unknown is any error that carries no kind.
	Unknown Kind = iota
	// Invalid is a request the agent refuses as it stands: a malformed
	// ID, a pid that is not the container's, an ID in use by another
	// running container.
	Invalid
	// NotGranted is a claim of a service that has no grant on this node.
	NotGranted
	// NotFound is something the agent no longer has (the fds of a
	// container mounted before a restart).
	NotFound
	// Refused is a claim the claimed service's claim rules do not admit
	// (api/claimrule), or that the secure default refuses.
	Refused
)

func (k Kind) String() string {
	switch k {
	case Invalid:
		return "invalid"
	case NotGranted:
		return "not granted"
	case NotFound:
		return "not found"
	case Refused:
		return "refused"
	}
	return "unknown"
}

// Error is an error of a Kind. Its message is the whole text; the kind is
// not repeated in it.
type Error struct {
	Kind Kind
	Msg  string
	// cause is the formatted error, through which errors.Is and errors.As
	// reach what a %w verb wrapped.
	cause error
}

func (e *Error) Error() string { return e.Msg }

// Unwrap returns what Errorf formatted, so that a %w verb's error stays
// reachable with errors.Is and errors.As.
func (e *Error) Unwrap() error { return e.cause }

// Errorf returns an *Error of kind k with a formatted message. A %w verb
// keeps the wrapped error reachable with errors.Is and errors.As.
func Errorf(k Kind, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &Error{Kind: k, Msg: err.Error(), cause: err}
}

// KindOf returns the kind of the first *Error in err's chain, or Unknown.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Unknown
}
