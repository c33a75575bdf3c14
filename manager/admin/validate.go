package admin

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/lockbox-project/lockbox/api/claimrule"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/api/validation"
	"github.com/lockbox-project/lockbox/manager/constraint"
	"github.com/lockbox-project/lockbox/mounter"
)

// Secret and service names follow swarm's rule (validation.ValidName);
// services too, since a container names its service in an annotation.
const (
	maxNameLen = validation.MaxNameLen
	// MaxSecretSize is the exclusive bound on a secret's size: 512000
	// bytes (500 KiB) is refused, as in swarm (validation.MaxSecretSize).
	MaxSecretSize = validation.MaxSecretSize

	maxLabels        = 64
	maxLabelKeyLen   = 128
	maxLabelValueLen = 4096
	maxReferences    = 256
	maxConstraints   = 64
)

func validateName(noun, name string) error {
	if name == "" {
		return invalid("%s name is empty", noun)
	}
	if len(name) > maxNameLen {
		return invalid("%s name '%.20s...' is %d characters long; the limit is %d", noun, name, len(name), maxNameLen)
	}
	if !validation.ValidName(name) {
		return invalid("invalid %s name %q: use letters, digits, '-', '_' and '.', starting and ending with a letter or digit", noun, name)
	}
	return nil
}

// validateNewServiceName checks the name of a service being created
// against swarm's service rule (validation.ValidServiceName), which is
// stricter than the secret rule: no '.', at most 63 characters. Updates
// check the name with validateName only, so services created before the
// rule stay editable.
func validateNewServiceName(name string) error {
	if err := validateName("service", name); err != nil {
		return err
	}
	if !validation.ValidServiceName(name) {
		return invalid("invalid service name %q: a service name has %s", name, validation.ServiceNameRule)
	}
	return nil
}

func validateData(size int) error {
	if size == 0 {
		return invalid("secret data is empty: a secret holds 1 to %d bytes", MaxSecretSize-1)
	}
	if size >= MaxSecretSize {
		return invalid("secret data is %d bytes: a secret must be smaller than %d bytes (500 KiB)", size, MaxSecretSize)
	}
	return nil
}

func validateLabels(labels map[string]string) error {
	if len(labels) > maxLabels {
		return invalid("%d labels: at most %d", len(labels), maxLabels)
	}
	for k, v := range labels {
		switch {
		case k == "":
			return invalid("label with an empty key")
		case len(k) > maxLabelKeyLen:
			return invalid("label key %.20q... is longer than %d bytes", k, maxLabelKeyLen)
		case len(v) > maxLabelValueLen:
			return invalid("value of label %q is longer than %d bytes", k, maxLabelValueLen)
		case !utf8.ValidString(k) || !utf8.ValidString(v):
			return invalid("label %q is not valid UTF-8", k)
		}
		if strings.ContainsFunc(k, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) || r == '=' }) {
			return invalid("label key %q holds a space, control character or '='", k)
		}
		if strings.ContainsFunc(v, unicode.IsControl) {
			return invalid("value of label %q holds a control character", k)
		}
	}
	return nil
}

// validateServiceSpec checks everything in a service spec that does not
// need the store. References must already name their secrets (SecretName
// set from the store) so target rules can use the default target. It
// rewrites the claim rules in canonical form without duplicates, so that
// what inspect shows and nodes receive is what was checked; spec is the
// caller's own copy.
func validateServiceSpec(spec *types.ServiceSpec) error {
	if spec == nil {
		return invalid("service spec is missing")
	}
	if err := validateName("service", spec.Name); err != nil {
		return err
	}
	if err := validateLabels(spec.Labels); err != nil {
		return err
	}
	cons := spec.GetPlacement().GetConstraints()
	if len(cons) > maxConstraints {
		return invalid("%d constraints: at most %d", len(cons), maxConstraints)
	}
	parsed, err := constraint.ParseAll(cons)
	if err != nil {
		return invalid("%v", err)
	}
	rules, err := claimrule.ParseSet(spec.ClaimRules)
	if err != nil {
		return invalid("%v", err)
	}
	spec.ClaimRules = nil
	for _, r := range rules.Strings() {
		if !slices.Contains(spec.ClaimRules, r) {
			spec.ClaimRules = append(spec.ClaimRules, r)
		}
	}
	if len(spec.Secrets) > maxReferences {
		return invalid("%d secret references: at most %d", len(spec.Secrets), maxReferences)
	}
	grants := make([]mounter.Grant, 0, len(spec.Secrets))
	for _, ref := range spec.Secrets {
		t := ref.GetTarget()
		grants = append(grants, mounter.Grant{
			SecretID:   ref.SecretId,
			SecretName: ref.SecretName,
			Target:     t.GetName(),
			UID:        t.GetUid(),
			GID:        t.GetGid(),
			Mode:       t.GetMode(),
		})
	}
	// The platform's target rules: Windows ones when the placement pins
	// Windows nodes, Linux ones otherwise.
	osys := mounter.Linux
	if placedOnWindows(parsed) {
		osys = mounter.Windows
	}
	if err := mounter.ValidateReferences(osys, grants); err != nil {
		return invalid("%v", err)
	}
	if err := checkSignals(spec, osys == mounter.Windows); err != nil {
		return invalid("%v", err)
	}
	return nil
}

// CheckSignals is the rule for the references' live-update signals, for
// the managers (validateServiceSpec) and the CLI, which checks before it
// sends: each signal is one api/validation.ParseSignal reads, sent only
// by a live update (a service without --live-update never changes a
// running container's files, so a signal would never be sent: refused as
// docker refuses flags that mean nothing), and never to Windows
// containers, which have no signals. A signal is stored as the user wrote
// it, as docker keeps --stop-signal: nodes parse it with the same rule.
// Constraints that do not parse count as no Windows placement; the caller
// reports them.
func CheckSignals(spec *types.ServiceSpec) error {
	cons, _ := constraint.ParseAll(spec.GetPlacement().GetConstraints())
	return checkSignals(spec, placedOnWindows(cons))
}

func checkSignals(spec *types.ServiceSpec, windows bool) error {
	for _, ref := range spec.GetSecrets() {
		sig := ref.GetSignal()
		if sig == "" {
			continue
		}
		name := ref.GetSecretName()
		if name == "" {
			name = ref.GetSecretId()
		}
		if _, err := validation.ParseSignal(sig); err != nil {
			return fmt.Errorf("secret reference '%s': %w", name, err)
		}
		if windows {
			return fmt.Errorf("secret reference '%s': signal=%s: Windows containers cannot take signals, and this service is placed on Windows nodes (node.platform.os==windows)", name, sig)
		}
		if !spec.GetLiveUpdate() {
			return fmt.Errorf("secret reference '%s': signal=%s needs --live-update: the signal is sent after a live update changed the container's files, and without it they never change", name, sig)
		}
	}
	return nil
}

func placedOnWindows(cs []constraint.Constraint) bool {
	for _, c := range cs {
		if c.Key == constraint.KeyOS && c.Op == constraint.Eq && strings.EqualFold(c.Value, "windows") {
			return true
		}
	}
	return false
}
