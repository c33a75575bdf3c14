// Package ruleexpr is the one syntax of placement constraints
// (manager/constraint) and claim rules (api/claimrule): KEY==VALUE or
// KEY!=VALUE, with whitespace around the key and the value ignored.
//
// It splits an expression and checks what every key shares (one operator,
// a key, a value, no control character in the value); what a key means and
// which values it takes belong to the packages that own the keys. It
// imports only the standard library: the agent links it through
// api/claimrule.
package ruleexpr

import (
	"errors"
	"strings"
	"unicode"
)

// Op is a comparison.
type Op int

const (
	Eq Op = iota // ==
	Ne           // !=
)

func (o Op) String() string {
	if o == Ne {
		return "!="
	}
	return "=="
}

// Syntax errors Split returns; their texts are the reasons users read, so
// callers wrap them with the expression and the kind of rule.
var (
	ErrNoOperator    = errors.New("want KEY==VALUE or KEY!=VALUE")
	ErrManyOperators = errors.New("more than one operator")
	ErrEmptyKey      = errors.New("empty key")
	ErrKeyOperator   = errors.New("'=' or '!' in the key")
	ErrEmptyValue    = errors.New("empty value")
	ErrControlChar   = errors.New("control character in value")
)

// Split splits s at its operator into the key and the value, both trimmed
// of surrounding white space. The first operator counts; a second one
// anywhere in the value is an error, as in swarm.
func Split(s string) (key string, op Op, value string, err error) {
	eq, ne := strings.Index(s, "=="), strings.Index(s, "!=")
	var i int
	switch {
	case eq < 0 && ne < 0:
		return "", 0, "", ErrNoOperator
	case ne < 0 || (eq >= 0 && eq < ne):
		op, i = Eq, eq
	default:
		op, i = Ne, ne
	}
	key = strings.TrimSpace(s[:i])
	value = strings.TrimSpace(s[i+2:])
	switch {
	case strings.Contains(value, "==") || strings.Contains(value, "!="):
		return "", 0, "", ErrManyOperators
	case key == "":
		return "", 0, "", ErrEmptyKey
	case strings.ContainsAny(key, "=!"):
		// "k! ==v" would read back as "k" != "=v" once written as "k!==v".
		return "", 0, "", ErrKeyOperator
	case value == "":
		return "", 0, "", ErrEmptyValue
	case strings.ContainsFunc(value, unicode.IsControl):
		return "", 0, "", ErrControlChar
	}
	return key, op, value, nil
}
