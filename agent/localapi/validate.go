package localapi

// maxServiceName is the longest service name the managers accept.
const maxServiceName = 64

// ValidServiceName reports whether s can name a service: swarm's rule for
// names (letters, digits, '-', '_' and '.', starting and ending with a
// letter or digit), at most 64 bytes, as the managers enforce it. A claim
// that breaks it names no service that can exist, and its text must not
// travel further into the agent's logs and errors.
func ValidServiceName(s string) bool {
	if len(s) == 0 || len(s) > maxServiceName {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		switch {
		case alnum:
		case (i == 0 || i == len(s)-1):
			return false
		case c == '-' || c == '_' || c == '.':
		default:
			return false
		}
	}
	return true
}
