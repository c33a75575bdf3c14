// Package validation holds the limits that the managers enforce when a
// secret or service is created and that every node-side component relies
// on: the name rules, the secret size bound and the live-update signal
// names. It is the one home of those rules (manager/admin, mounter, the
// agent's local API and the CLI use it).
//
// It imports only the standard library and compiles no regular expression:
// lockbox-runtime, on every runc call, links it through mounter.
package validation

import (
	"strconv"
	"strings"
)

const (
	// MaxNameLen is the longest secret or service name, in bytes.
	MaxNameLen = 64
	// MaxSecretSize is the exclusive upper bound of a secret's size: a
	// secret holds 1 to MaxSecretSize-1 bytes (smaller than 500 KiB, as in
	// swarm).
	MaxSecretSize = 500 * 1024
)

// NameRule says in words what ValidName accepts, for error messages.
var NameRule = "letters, digits, '-', '_' and '.', starting and ending with a letter or digit, at most " + strconv.Itoa(MaxNameLen) + " characters"

// ValidName reports whether s can name a secret or a service: swarm's
// rule `^[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?$`, at most MaxNameLen
// bytes. Such a name is also a safe single path element (the default
// target of a secret is its name).
func ValidName(s string) bool { return validName(s, MaxNameLen, "-_.") }

// MaxServiceNameLen is the longest name of a new service: 63, a DNS
// label, as in swarm (swarmkit controlapi validateAnnotations: "name must
// be 63 characters or fewer").
const MaxServiceNameLen = 63

// ServiceNameRule says in words what ValidServiceName accepts.
var ServiceNameRule = "letters, digits, '-' and '_', starting and ending with a letter or digit, at most " + strconv.Itoa(MaxServiceNameLen) + " characters (swarm's rule for service names: no '.')"

// ValidServiceName reports whether s can name a new service: swarm's
// service rule `^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$` (swarmkit
// controlapi isValidDNSName), at most MaxServiceNameLen bytes. It is
// stricter than ValidName (no '.', one character shorter), so every such
// name is also a ValidName; services created before this rule keep their
// names, which is why nodes check service names with ValidName.
func ValidServiceName(s string) bool { return validName(s, MaxServiceNameLen, "-_") }

// validName is swarm's shape of a name: at most max bytes of ASCII letters
// and digits, with the punctuation in inner only between the first and
// the last character.
func validName(s string, max int, inner string) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i == 0 || i == len(s)-1:
			return false
		case strings.IndexByte(inner, c) >= 0:
		default:
			return false
		}
	}
	return true
}

// ValidSecretSize reports whether a secret of n bytes may exist: 1 to
// MaxSecretSize-1.
func ValidSecretSize(n int64) bool { return n >= 1 && n < MaxSecretSize }
