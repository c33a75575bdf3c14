package claimrule

import (
	"errors"
	"fmt"
	"strings"

	"github.com/lockbox-project/lockbox/api/ruleexpr"
)

// Op is a comparison, as in placement constraints.
type Op = ruleexpr.Op

const (
	Eq = ruleexpr.Eq // ==
	Ne = ruleexpr.Ne // !=
)

// The keys a claim rule may test.
const (
	KeyK8sNamespace        = "k8s.namespace"
	KeyK8sPodLabelPrefix   = "k8s.pod.label."
	KeyContainerdNamespace = "containerd.namespace"
	// KeyImage is "container.image", not plain "image": every key names
	// what it describes (k8s.*, containerd.*, container.*), as placement's
	// node.* keys do, so a reader never takes it for an image the service
	// runs (a service runs nothing).
	KeyImage = "container.image"
)

// KeysHelp lists the keys in words, for error messages and flag help.
const KeysHelp = "k8s.namespace, k8s.pod.label.<key>, containerd.namespace or container.image"

// MaxRules is the most claim rules a service may have.
const MaxRules = 64

// maxValueLen bounds a value of any key; the per-key rules are tighter
// except for images.
const maxValueLen = 1024

// Rule is one parsed claim rule.
type Rule struct {
	// Key is canonical: lower case, except that the label of
	// k8s.pod.label.<key> keeps its case (Kubernetes label keys are
	// case-sensitive).
	Key string
	// Label is the pod label's key when Key starts with k8s.pod.label.
	Label string
	Op    Op
	Value string
}

// String is the canonical form, which Parse accepts.
func (r Rule) String() string { return r.Key + r.Op.String() + r.Value }

// ErrInvalid is the kind of every error of Parse and ParseSet.
var ErrInvalid = errors.New("invalid claim rule")

// Error is a rule that cannot be accepted, with a reason a user can act
// on.
type Error struct {
	Rule   string
	Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("invalid claim rule %q: %s", e.Rule, e.Reason)
}

func (e *Error) Unwrap() error { return ErrInvalid }

// Parse parses one rule such as "k8s.namespace==payments". A value that no
// container could ever have (a Kubernetes namespace in upper case, a
// containerd namespace with a space) is an error: such a rule could never
// hold.
func Parse(s string) (Rule, error) {
	fail := func(format string, args ...any) (Rule, error) {
		return Rule{}, &Error{Rule: s, Reason: fmt.Sprintf(format, args...)}
	}
	key, op, value, err := ruleexpr.Split(s)
	if err != nil {
		return fail("%v", err)
	}
	if len(value) > maxValueLen {
		return fail("value is %d bytes long; the limit is %d", len(value), maxValueLen)
	}
	r := Rule{Op: op, Value: value}
	lower := strings.ToLower(key)
	switch {
	case lower == KeyK8sNamespace:
		r.Key = lower
		if !dnsLabel(value) {
			return fail("%q is not a Kubernetes namespace (a lower-case RFC 1123 label: a-z, 0-9 and '-', at most 63 characters), so the rule could never hold", value)
		}
	case strings.HasPrefix(lower, KeyK8sPodLabelPrefix):
		label := key[len(KeyK8sPodLabelPrefix):]
		if label == "" {
			return fail("empty label key after %s", KeyK8sPodLabelPrefix)
		}
		if why := labelKeyProblem(label); why != "" {
			return fail("%q is not a Kubernetes label key (%s), so the rule could never hold", label, why)
		}
		if !labelValue(value) {
			return fail("%q is not a Kubernetes label value (at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit), so the rule could never hold", value)
		}
		r.Key, r.Label = KeyK8sPodLabelPrefix+label, label
	case lower == KeyContainerdNamespace:
		r.Key = lower
		if !containerdNamespace(value) {
			return fail("%q is not a containerd namespace (letters and digits, separated by single '.', '_' or '-', at most 76 characters), so the rule could never hold", value)
		}
	case lower == KeyImage:
		r.Key = lower
		if why := imageProblem(value); why != "" {
			return fail("%q is not an image name (%s), so the rule could never hold", value, why)
		}
	default:
		return fail("unknown key %q; use %s", key, KeysHelp)
	}
	return r, nil
}

func alnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func lowerAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// dnsLabel is RFC 1123's label, which Kubernetes namespaces follow.
func dnsLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || !lowerAlnum(s[0]) || !lowerAlnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !lowerAlnum(s[i]) && s[i] != '-' {
			return false
		}
	}
	return true
}

// dnsSubdomain is RFC 1123's subdomain, the prefix of a label key.
func dnsSubdomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, part := range strings.Split(s, ".") {
		if !dnsLabel(part) {
			return false
		}
	}
	return true
}

// labelName is the name part of a Kubernetes label key and, non-empty, a
// label value: at most 63 of [A-Za-z0-9-_.], starting and ending with a
// letter or digit.
func labelName(s string) bool {
	if len(s) == 0 || len(s) > 63 || !alnum(s[0]) || !alnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !alnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

func labelValue(s string) bool { return labelName(s) }

func labelKeyProblem(k string) string {
	name := k
	if prefix, n, ok := strings.Cut(k, "/"); ok {
		if !dnsSubdomain(prefix) {
			return "its prefix before '/' must be a lower-case DNS subdomain"
		}
		name = n
	}
	if !labelName(name) {
		return "its name must be at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
	}
	return ""
}

// containerdNamespace is containerd's identifier rule (identifiers.Validate).
func containerdNamespace(s string) bool {
	if len(s) == 0 || len(s) > 76 || !alnum(s[0]) || !alnum(s[len(s)-1]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if alnum(c) {
			continue
		}
		if c != '.' && c != '_' && c != '-' || !alnum(s[i-1]) {
			return false
		}
	}
	return true
}

// imageProblem checks the characters a reference may hold; it does not
// normalise ("nginx" is not "docker.io/library/nginx:latest"), because the
// rule compares with the name containerd records, which is normalised.
func imageProblem(s string) string {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !alnum(c) && strings.IndexByte("._-/:@+", c) < 0 {
			return "only ASCII letters, digits and . _ - / : @ + are allowed"
		}
	}
	if strings.HasPrefix(s, "/") || strings.HasSuffix(s, "/") || strings.HasSuffix(s, ":") || strings.HasSuffix(s, "@") {
		return "it may not start with '/' or end with '/', ':' or '@'"
	}
	if repository(s) == "" {
		return "it names no repository"
	}
	return ""
}

// repository is an image name without its tag and digest:
// "docker.io/library/nginx:1.27@sha256:..." -> "docker.io/library/nginx".
// A ':' before the last '/' is a registry's port, not a tag.
func repository(ref string) string {
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		ref = ref[:i]
	}
	return ref
}

// imageMatches reports whether an image named name satisfies the value of
// a container.image rule: a value with a tag or digest must equal the name;
// one without matches every tag and digest of that repository.
func imageMatches(value, name string) bool {
	if repository(value) == value {
		return repository(name) == value
	}
	return name == value
}
