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

// IsCode reports whether err is an *Error with the given code.
func IsCode(err error, code agent.Error_Code) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}
