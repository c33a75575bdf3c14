package localapi

import "github.com/lockbox-project/lockbox/api/validation"

// ValidServiceName reports whether s can name a service
// (validation.ValidName, the rule the managers enforce). A claim that
// breaks it names no service that can exist, and its text must not travel
// further into the agent's logs and errors.
func ValidServiceName(s string) bool { return validation.ValidName(s) }
