package localapi

import (
	"errors"
	"fmt"

	"github.com/lockbox-project/lockbox/api/agent"
)

// Error is a failure the agent reported for a request. Callers branch on
// Code (errors.As); Message is meant for a human and never holds secret data.
type Error struct {
	Code    agent.Error_Code
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("agent: %s: %s", e.Code, e.Message)
}

// Errorf builds an *Error with a formatted message.
func Errorf(code agent.Error_Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// toProto turns any error into the wire form; errors that are not *Error are
// reported as UNKNOWN with their text.
func toProto(err error) *agent.Error {
	var e *Error
	if errors.As(err, &e) {
		return &agent.Error{Code: e.Code, Message: e.Message}
	}
	return &agent.Error{Code: agent.Error_UNKNOWN, Message: err.Error()}
}

func fromProto(pe *agent.Error) *Error {
	return &Error{Code: pe.GetCode(), Message: pe.GetMessage()}
}

// IsCode reports whether err is an *Error with the given code.
func IsCode(err error, code agent.Error_Code) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}
